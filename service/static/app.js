// The gendef-serve page: generate, follow a job over Server-Sent Events, play the video, paint on the canonical
// image and submit the painting as an edit, resample motion, track picked points, propagate a painted mask.
// Plain browser JavaScript, no build step. With API keys on, the key entered on the page (kept for the tab in
// sessionStorage) goes in an Authorization header on every call: the events are read with fetch streaming and the
// canonical image fetched as a blob, as EventSource and <img> cannot send that header.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["succeeded", "failed", "canceled"]);

const KEY_ITEM = "gendef-api-key";  // sessionStorage: the key lives as long as the tab

let stream = null;      // the AbortController of the followed job's event stream
let source = null;      // the succeeded job whose video and canonical image are shown (what edits start from)
let points = [];        // picked canonical points to track, canvas pixels
const VIEWS = new Set(["track", "segment", "render"]);  // jobs that show a video over the source's canonical image
// why a tile starts inside a shot (docs/API.md, Shots: `reason`); a cut starts a new shot
const SPLIT_BY = {length: "(split for length)", panorama: "(panorama full)"};
const history = new Map();  // job id -> its latest document

// --- API calls ------------------------------------------------------------------------------------------------

function authorized(headers = {}) {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? {...headers, Authorization: `Bearer ${key}`} : headers;
}

async function errorText(response) {
  if (response.status === 401) return "This API needs a valid API key: enter yours in the “API key” field.";
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (Array.isArray(body.detail)) {   // 422: one line per invalid field
      detail = body.detail.map((e) => `${e.loc.filter((p) => p !== "body").join(".")}: ${e.msg}`).join("\n");
    } else if (body.detail) {
      detail = body.detail;
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return detail;
}

async function submit(path, init) {
  clearError();
  setBusy(true);
  try {
    const response = await fetch(path, {...init, headers: authorized(init.headers)});
    if (!response.ok) {
      showError(await errorText(response));
      return;
    }
    follow(await response.json());
  } catch (e) {
    showError(`The API could not be reached (${e.message}).`);
  } finally {
    setBusy(false);
  }
}

function generate(body) {
  submit("generate", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
}

let models = new Map();  // name -> its entry of GET /models

async function loadModels() {
  const response = await fetch("models");
  if (!response.ok) return showError(`The models could not be listed: ${await errorText(response)}`);
  const listed = await response.json();
  models = new Map(listed.map((m) => [m.name, m]));
  $("model").replaceChildren(...listed.map((m) => {
    const label = `${m.name} (${m.resolution}×${m.resolution}, up to ${m.max_frames} frames)`;
    const option = new Option(label, m.name, m.default, m.default);
    option.title = m.trained_on ? `version ${m.version}, trained on: ${m.trained_on}` : `version ${m.version}`;
    return option;
  }));
  showLabels();
}

function showLabels() {
  // A conditional model's classes as checkboxes: pick labels_per_video of them, or none for the seed's.
  const model = models.get($("model").value);
  const classes = model ? model.classes : [];
  $("labels").hidden = classes.length === 0;
  if (!classes.length) return $("label-choices").replaceChildren();
  $("labels-legend").textContent = `Labels: pick ${model.labels_per_video}, or none for the seed's`;
  $("label-choices").replaceChildren(...classes.map((name, index) => {
    const box = Object.assign(document.createElement("input"), {type: "checkbox", value: String(index)});
    const label = document.createElement("label");
    label.append(box, ` ${name}`);
    return label;
  }));
}

function pickedLabels() {
  // The class indices picked, or undefined (not sent: the seed decides them).
  const picked = [...$("label-choices").querySelectorAll("input:checked")].map((box) => Number(box.value));
  return picked.length ? picked : undefined;
}

// The forms' number fields take the API's own defaults and bounds from its OpenAPI document (service/limits.py
// declares them); the page repeats none. A field left empty is not sent, so the API's default applies.
const LIMITED_FIELDS = {
  "seed": ["generate", "seed"], "motion-seed": ["generate", "motion_seed"],
  "num-frames": ["generate", "num_frames"], "fps": ["generate", "fps"],
  "clip-frames": ["decompose", "num_frames"], "clip-resolution": ["decompose", "resolution"],
};

async function loadLimits() {
  const response = await fetch("openapi.json");
  if (!response.ok) return;   // the fields stay unbounded: the API still checks every value
  const spec = await response.json();
  for (const [id, [path, name]] of Object.entries(LIMITED_FIELDS)) {
    const content = Object.values(spec.paths[`/${path}`].post.requestBody.content)[0];
    const prop = spec.components.schemas[content.schema.$ref.split("/").pop()].properties[name];
    const bounds = (prop.anyOf || [prop]).find((option) => option.type !== "null") || prop;
    if (bounds.minimum !== undefined) $(id).min = bounds.minimum;
    if (bounds.maximum !== undefined) $(id).max = bounds.maximum;
    if (prop.default !== undefined && prop.default !== null) $(id).value = prop.default;
  }
}

function intField(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

// --- following a job ------------------------------------------------------------------------------------------

function parseEvent(block) {
  // One Server-Sent Events block: its `event:` name and its `data:` lines (comments and `retry:` ignored).
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return {name, data: data.join("\n")};
}

async function readEvents(response, signal) {
  // Handle the stream's events; true once the job has ended (or its record expired).
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!signal.aborted) {
    const {value, done} = await reader.read();
    if (done) return false;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event.name === "update") render(JSON.parse(event.data));
      else if (event.name === "final") {
        const last = JSON.parse(event.data);
        render(last);
        finished(last);
        return true;
      } else if (event.name === "error") {   // the server's own error event (record expired)
        showError(JSON.parse(event.data).detail);
        return true;
      }
    }
  }
  return true;
}

async function follow(doc) {
  if (stream) stream.abort();
  render(doc);
  if (FINAL.has(doc.status)) return finished(doc);
  const controller = stream = new AbortController();
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(`jobs/${doc.id}/events`, {headers: authorized(), signal: controller.signal});
      if (!response.ok) return showError(await errorText(response));
      clearError();
      if (await readEvents(response, controller.signal)) return;
    } catch (_) {
      if (controller.signal.aborted) return;
    }
    showError("Lost the event stream; reconnecting…");
    await new Promise((resume) => setTimeout(resume, 2000));
  }
}

function seconds(value) {
  return `${value.toFixed(1)} s`;
}

function render(doc) {
  history.set(doc.id, doc);
  $("job").hidden = false;
  $("job-id").textContent = doc.id;
  $("job-kind").textContent = doc.kind;
  const status = $("job-status");
  status.textContent = doc.status;
  status.className = `status ${doc.status}`;
  $("progress").value = doc.progress;
  const parts = [];
  if (doc.queue_position !== null) parts.push(doc.queue_position === 0 ? "next in the queue" : `${doc.queue_position} job(s) ahead in the queue`);
  if (doc.status === "running") parts.push(`${doc.stage || "starting"} ${Math.round(doc.progress * 100)} %`);
  const m = doc.metrics;
  if (m.queue_time !== null) parts.push(`queued ${seconds(m.queue_time)}`);
  if (m.run_time !== null) parts.push(`ran ${seconds(m.run_time)}`);
  const stages = Object.entries(m.stage_times).map(([stage, s]) => `${stage} ${seconds(s)}`);
  if (stages.length) parts.push(stages.join(", "));
  if (doc.error) parts.push(`${doc.error.code}: ${doc.error.message}`);
  $("job-detail").textContent = parts.join(" · ");
  const links = $("downloads");
  links.replaceChildren(...Object.entries(doc.artifacts).map(([name, a]) => {
    const link = document.createElement("a");
    link.href = a.url;
    link.download = name;
    link.textContent = `${name} (${Math.ceil(a.bytes / 1024)} KiB)`;
    return link;
  }));
  renderHistory();
}

function finished(doc) {
  if (doc.status === "succeeded") show(doc);
  else if (doc.error) showError(`Job ${doc.id} failed: ${doc.error.message}`);
}

function renderHistory() {
  $("history-box").hidden = false;
  $("history").replaceChildren(...[...history.values()].map((doc) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.textContent = `${doc.kind} ${doc.id.slice(0, 8)}`;
    link.addEventListener("click", () => follow(doc));
    item.append(link, ` ${doc.status}`);
    return item;
  }));
}

// --- the result: video and canonical image --------------------------------------------------------------------

async function show(doc) {
  $("result").hidden = false;
  const video = $("video");
  video.src = doc.artifacts.video.url;
  video.play().catch(() => { /* autoplay refused: the controls are there */ });
  const {model, version} = doc.params;
  const labels = doc.result?.labels;
  $("made-by").textContent = model
    ? `model ${model}, version ${version}${labels ? `, labels ${labels.join(", ")}` : ""}` : "";
  if (VIEWS.has(doc.kind)) return;   // tracks or masks drawn over the source's video: the canvas stays
  source = doc;
  // a decomposed clip's tiles: a canonical image per shot, or per segment of a long shot, side by side
  const shots = doc.result?.shots || [];
  const count = new Set(shots.map((s, i) => s.shot ?? i)).size;
  const segmented = shots.length > count ? ` in ${shots.length} segments` : "";
  $("shots").textContent = shots.length > 1
    ? `${count} shot${count > 1 ? "s" : ""}${segmented}, their canonical images side by side (frames ${shots.map((s) => `${s.start}–${s.start + s.frames - 1}${SPLIT_BY[s.reason] ? ` ${SPLIT_BY[s.reason]}` : ""}`).join(" | ")}): paint on any; each image's frames show only its own.`
    : "";
  points = [];
  const image = new Image();
  image.onload = () => {
    for (const canvas of [$("base"), $("paint")]) {
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
    }
    // shown at its own shape (a decomposed clip's is a panorama, often wide), as wide as the page allows
    $("base").parentElement.style.aspectRatio = `${image.naturalWidth} / ${image.naturalHeight}`;
    $("base").getContext("2d").drawImage(image, 0, 0);
    URL.revokeObjectURL(image.src);
  };
  image.onerror = () => showError("The canonical image could not be loaded.");
  try {   // fetched with the key, shown from a blob: URL (same origin: the canvas stays readable)
    const response = await fetch(`jobs/${doc.id}/canonical.png`, {headers: authorized()});
    if (!response.ok) return showError(await errorText(response));
    image.src = URL.createObjectURL(await response.blob());
  } catch (e) {
    showError(`The canonical image could not be loaded (${e.message}).`);
  }
}

// --- painting -------------------------------------------------------------------------------------------------

let last = null;  // the previous point of the stroke being drawn, canvas pixels

function canvasPoint(event) {
  const canvas = $("paint");
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) / box.width * canvas.width, (event.clientY - box.top) / box.height * canvas.height];
}

function stroke(to) {
  const ctx = $("paint").getContext("2d");
  ctx.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = $("colour").value;
  ctx.lineWidth = Number($("brush").value);
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(...(last || to));
  ctx.lineTo(...to);
  ctx.stroke();
  last = to;
}

function setUpPainting() {
  const paint = $("paint");
  paint.addEventListener("pointerdown", (e) => {
    if ($("pick").checked) return pickPoint(canvasPoint(e));
    paint.setPointerCapture(e.pointerId);
    last = null;
    stroke(canvasPoint(e));
  });
  paint.addEventListener("pointermove", (e) => { if (last) stroke(canvasPoint(e)); });
  for (const name of ["pointerup", "pointercancel"]) paint.addEventListener(name, () => { last = null; });
  $("clear").addEventListener("click", () => {
    paint.getContext("2d").clearRect(0, 0, paint.width, paint.height);
    points = [];
  });
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const bitmap = await createImageBitmap(file);
      const base = $("base");
      base.getContext("2d").drawImage(bitmap, 0, 0, base.width, base.height);  // the API resizes too
      paint.getContext("2d").clearRect(0, 0, paint.width, paint.height);
    } catch (_) {
      showError("That file could not be read as an image: choose a PNG or JPEG.");
    }
  });
}

function submitEdit() {
  if (!source) return;
  const base = $("base");
  const out = document.createElement("canvas");
  out.width = base.width;
  out.height = base.height;
  const ctx = out.getContext("2d");
  ctx.drawImage(base, 0, 0);
  ctx.drawImage($("paint"), 0, 0);
  out.toBlob((blob) => {
    const form = new FormData();
    form.append("job_id", source.id);
    form.append("image", blob, "canonical.png");
    submit("edit", {method: "POST", body: form});
  }, "image/png");
}

// --- tracks and masks ------------------------------------------------------------------------------------------

function pickPoint([x, y]) {
  points.push([x - 0.5, y - 0.5]);   // the API's pixel coordinates put pixel centres at integers
  const ctx = $("paint").getContext("2d");
  ctx.globalCompositeOperation = "source-over";
  ctx.fillStyle = "#ffff00";
  ctx.beginPath();
  ctx.arc(x, y, 1.5, 0, 2 * Math.PI);
  ctx.fill();
}

function trackPoints() {
  if (!source) return;
  if (!points.length) return showError("Tick “Pick points to track” and click on the canonical image first.");
  submit("track", {method: "POST", headers: {"Content-Type": "application/json"},
                   body: JSON.stringify({job_id: source.id, points})});
}

function crc32(bytes) {
  let c, crc = 0xffffffff;
  for (const b of bytes) {
    c = (crc ^ b) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

async function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function grayPng(labels, width, height) {
  // A one-channel 8-bit PNG (what /segment takes): rows with filter byte 0, zlib-compressed by the browser.
  const raw = new Uint8Array((width + 1) * height);
  for (let y = 0; y < height; y++) raw.set(labels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const zipped = new Uint8Array(await new Response(new Blob([raw]).stream()
    .pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8);   // bit depth 8, grayscale, deflate, no filter method, no interlace
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), await chunk("IHDR", header),
                 await chunk("IDAT", zipped), await chunk("IEND", new Uint8Array())];
  return new Blob(parts, {type: "image/png"});
}

async function segmentPainted() {
  if (!source) return;
  const paint = $("paint");
  const rgba = paint.getContext("2d").getImageData(0, 0, paint.width, paint.height).data;
  const labels = new Uint8Array(paint.width * paint.height);
  for (let i = 0; i < labels.length; i++) labels[i] = rgba[4 * i + 3] > 0 ? 1 : 0;   // painted → label 1
  if (!labels.some((v) => v)) return showError("Paint the area to segment on the canonical image first.");
  const form = new FormData();
  form.append("job_id", source.id);
  form.append("mask", await grayPng(labels, paint.width, paint.height), "mask.png");
  submit("segment", {method: "POST", body: form});
}

// --- page state -----------------------------------------------------------------------------------------------

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function setBusy(busy) {
  for (const id of ["generate", "random", "resample", "submit-edit", "track", "segment"]) $(id).disabled = busy;
}

function init() {
  $("api-key").value = sessionStorage.getItem(KEY_ITEM) || "";
  $("api-key").addEventListener("input", (e) => {
    const key = e.target.value.trim();
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
  });
  $("generate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    generate({model: $("model").value || null, seed: intField("seed"), motion_seed: intField("motion-seed"),
              num_frames: intField("num-frames") ?? undefined, fps: intField("fps") ?? undefined,
              labels: pickedLabels()});
  });
  $("random").addEventListener("click", () => {
    $("seed").value = $("motion-seed").value = "";
    generate({model: $("model").value || null, num_frames: intField("num-frames") ?? undefined,
              fps: intField("fps") ?? undefined, labels: pickedLabels()});
  });
  $("resample").addEventListener("click", () => {
    if (source) generate({canonical_from: source.id, num_frames: source.params.num_frames ?? intField("num-frames") ?? undefined,
                          fps: source.params.fps});
  });
  $("decompose-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("video", $("clip").files[0]);
    for (const [id, name] of [["clip-frames", "num_frames"], ["clip-resolution", "resolution"]]) {
      if (intField(id) !== null) form.append(name, String(intField(id)));
    }
    submit("decompose", {method: "POST", body: form});
  });
  $("render-2x").addEventListener("click", () => {
    if (!source) return;
    const form = new FormData();
    form.append("job_id", source.id);
    form.append("scale", "2");
    form.append("fps_factor", "2");
    submit("render", {method: "POST", body: form});
  });
  $("submit-edit").addEventListener("click", submitEdit);
  $("track").addEventListener("click", trackPoints);
  $("segment").addEventListener("click", segmentPainted);
  setUpPainting();
  $("model").addEventListener("change", showLabels);
  loadLimits();
  loadModels();
}

init();
