"""`gambar serve`: a REST API with a fair job queue, a web page, and OpenAI/A1111 dialects.

Layout: app.py (the FastAPI app), routes.py (gambar's API), service.py (queue + workers +
results), queue.py (round-robin between clients), store.py (results folder), worker.py (one
job), compat_openai.py and compat_a1111.py (the other APIs), static/ (the page).
"""
