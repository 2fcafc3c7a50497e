"""`gambar serve`: a REST API with a fair job queue, a web page, and OpenAI/A1111 dialects.

Layout: app.py (the FastAPI app), routes.py (gambar's API), service.py (queue + workers +
results), queue.py (round-robin between tokens/addresses, then client ids), journal.py (the
unfinished jobs in SQLite, so they survive a crash), store.py (results folder), worker.py (one
job), body_limit.py (413 for large bodies), compat_openai.py, compat_a1111.py and
compat_a1111_img2img.py (the other APIs), static/ (the page).
"""
