"""What the API (service/) and the workers (worker/) share, and nothing else: settings, job records and their Redis
layout, storage, queue and task names, the job document, artifact formats, image and video I/O, domain errors.

Never imports torch, FastAPI or worker code; model/ may import core.video (and nothing else of core)."""
