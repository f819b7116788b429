"""The request defaults and bounds of the public API, declared once.

The request schemas and the routes' form fields take their numbers from here, so the OpenAPI document says them;
docs/API.md states them and tests/service/test_limits.py fails when the two differ. The CLI and the client repeat
none of them: they send a field only when it is given, and their help says "the API's default" (a client talks to
deployments of other versions, whose numbers it cannot know). What a deployment may change is a setting instead
(``GENDEF_MAX_*``, core/settings.py, docs/CONFIG.md), checked by the API where the request is turned into a job.

A route's request-body limit is declared on the route itself: see service/uploads.py (``upload_file``).
"""

from __future__ import annotations

# Seeds: the model takes [0, 2**32) (larger ones would collide: model.gendef.SEED_RANGE); the seeds the API draws
# for a request that gives none are below RANDOM_SEED_BOUND, so they fit a signed 32-bit integer in any client.
MAX_SEED = 2**32 - 1
RANDOM_SEED_BOUND = 2**31

MAX_ID_CHARS = 64  # a job id (32 hex characters) or a model name in a request

# The encoded video of /generate, /edit, /decompose.
DEFAULT_FRAMES = (
    16  # /generate's num_frames (its upper bound is a deployment's: GENDEF_MAX_FRAMES, each model's)
)
MIN_FPS, MAX_FPS, DEFAULT_FPS = 1, 60, 8
MAX_RENDER_FPS = 240  # a render at fps_factor times the frame rate may go past MAX_FPS

MAX_POINTS = 256  # POST /track

# POST /render: scale and fps_factor, and how far an uploaded canonical image's aspect ratio may be from the job's
# (relative: a 2x or 4x image rounded to whole pixels is off by a pixel or so).
DEFAULT_SCALE, MAX_SCALE = 2, 4
DEFAULT_FPS_FACTOR, MAX_FPS_FACTOR = 1, 4
ASPECT_TOLERANCE = 0.02

# POST /decompose (the upper bounds of frames and resolution are a deployment's: GENDEF_MAX_DECOMPOSE_*).
DECOMPOSE_FRAMES, MIN_DECOMPOSE_FRAMES = 32, 2
DECOMPOSE_RESOLUTION, MIN_DECOMPOSE_RESOLUTION = 128, 16
# 300: the fit starts from the camera's motion and the frames' median; more steps sharpen what moves on its own
DECOMPOSE_STEPS, MAX_DECOMPOSE_STEPS = 300, 20000

# Request bodies: a JSON document is small; an upload's body is its files' limits plus the form's other fields
# and part headers.
JSON_BODY_LIMIT = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024
