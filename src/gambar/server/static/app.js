// gambar's page: submit jobs to /api/jobs, poll their progress, show results. No build step.
"use strict";

const POLL_MS = 400; // a job's progress
const STATUS_MS = 5000; // the queue length in the header
const $ = (id) => document.getElementById(id);
const NUMBER_FIELDS = ["n", "seed", "steps", "guidance", "size"];
const TEXT_FIELDS = ["prompt", "negative_prompt", "sampler", "model"];

// One id per browser, so that the server's fair queue treats this page as one client.
function clientId() {
  let id = localStorage.getItem("gambar-client-id");
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    id = "page-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("gambar-client-id", id);
  }
  return id;
}

async function api(path, options = {}) {
  const headers = { "X-Client-Id": clientId(), ...(options.headers || {}) };
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    let message = (data && data.error) || `${response.status} ${response.statusText}`;
    const retry = response.headers.get("Retry-After");
    if (response.status === 429 && retry) message += ` (try again in ${retry} s)`;
    throw new Error(message);
  }
  return data;
}

function showError(message) {
  const box = $("form-error");
  box.textContent = message || "";
  box.hidden = !message;
}

// ---- the form ---------------------------------------------------------------------------
function readForm() {
  const body = {};
  for (const name of TEXT_FIELDS) {
    const value = $(name).value;
    if (value !== "") body[name] = value;
  }
  for (const name of NUMBER_FIELDS) {
    const value = $(name).value.trim();
    if (value !== "") body[name] = Number(value);
  }
  return body;
}

function fillForm(settings) {
  for (const name of [...TEXT_FIELDS, ...NUMBER_FIELDS]) {
    if (settings[name] !== undefined && settings[name] !== null) $(name).value = settings[name];
  }
  if (settings.negative_prompt || settings.size) $("more").open = true;
  $("prompt").focus();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

async function submit(body) {
  showError("");
  try {
    const job = await api("/api/jobs", { method: "POST", body: JSON.stringify(body) });
    track(job);
  } catch (err) {
    showError(err.message);
  }
}

// ---- jobs in progress -------------------------------------------------------------------
const tracked = new Map(); // job id -> its progress element

function describe(job) {
  if (job.state === "queued") {
    return job.queue_position ? `queued, position ${job.queue_position}` : "queued";
  }
  if (job.state === "running") {
    return job.progress.steps ? `step ${job.progress.step} of ${job.progress.steps}`
                              : "starting";
  }
  return job.error ? `${job.state}: ${job.error}` : job.state;
}

function track(job) {
  if (tracked.has(job.id)) return;
  const node = $("job-template").content.firstElementChild.cloneNode(true);
  node.dataset.job = job.id;
  node.querySelector(".job-prompt").textContent = job.settings.prompt;
  node.querySelector(".cancel").addEventListener("click", () =>
    api(`/api/jobs/${job.id}/cancel`, { method: "POST" }).catch((e) => showError(e.message)));
  $("active").prepend(node);
  tracked.set(job.id, node);
  update(job);
  poll(job.id);
}

function update(job) {
  const node = tracked.get(job.id);
  if (!node) return;
  const bar = node.querySelector("progress");
  if (job.state === "queued") bar.removeAttribute("value"); // indeterminate while waiting
  else bar.value = job.progress.fraction;
  node.querySelector(".job-status").textContent = describe(job);
  node.classList.toggle("failed", job.state === "failed" || job.state === "cancelled");
}

async function poll(id) {
  for (;;) {
    let job;
    try {
      job = await api(`/api/jobs/${id}`);
    } catch (err) {
      tracked.get(id).querySelector(".job-status").textContent = err.message;
      return;
    }
    update(job);
    if (job.state === "done") {
      tracked.get(id).remove();
      tracked.delete(id);
      addResults(job);
      return;
    }
    if (job.state === "failed" || job.state === "cancelled") {
      const node = tracked.get(id);
      tracked.delete(id);
      setTimeout(() => node.remove(), 8000); // leave the reason readable for a while
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// ---- the gallery ------------------------------------------------------------------------
function summary(s, seed) {
  const size = s.output_size ? `${s.output_size} px (drawn at ${s.size})` : `${s.size} px`;
  return `seed ${seed} · ${s.steps} steps · guidance ${s.guidance} · ${s.sampler} · ${size}` +
         ` · ${s.model}` + (s.negative_prompt ? ` · not: ${s.negative_prompt}` : "");
}

function addResults(job, append = false) {
  const gallery = $("gallery");
  const cards = job.images.map((image) => card(job.settings, image));
  if (append) cards.forEach((c) => gallery.append(c));
  else cards.reverse().forEach((c) => gallery.prepend(c));
  $("empty").hidden = gallery.children.length > 0;
}

function card(settings, image) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  const img = node.querySelector("img");
  img.src = image.url;
  img.alt = `${settings.prompt} (seed ${image.seed})`;
  node.querySelector(".frame").href = image.url;
  node.querySelector(".prompt").textContent = settings.prompt;
  node.querySelector(".meta").textContent = summary(settings, image.seed);
  const download = node.querySelector(".download");
  download.href = image.url;
  download.download = `gambar-${image.seed}.png`;
  const one = { ...settings, n: 1, seed: image.seed };
  delete one.seeds;
  delete one.output_size;
  node.querySelector(".variation").addEventListener("click", () => {
    const variation = { ...one };
    delete variation.seed; // the server draws a fresh random seed
    submit(variation);
  });
  node.querySelector(".reuse").addEventListener("click", () => fillForm(one));
  node.dataset.seed = image.seed;
  return node;
}

// ---- start ------------------------------------------------------------------------------
async function refreshStatus() {
  try {
    const health = await api("/api/health");
    $("server-status").textContent =
      `${health.queue.queued} queued · ${health.queue.running} running`;
  } catch (err) {
    $("server-status").textContent = "server unreachable";
  }
}

async function start() {
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit(readForm());
  });
  try {
    const models = await api("/api/models");
    for (const name of models.limits.samplers) $("sampler").append(new Option(name, name));
    for (const m of models.models) $("model").append(new Option(m.name, m.name, m.default, m.default));
    const defaults = (models.models.find((m) => m.default) || models.models[0]).defaults;
    $("sampler").value = defaults.sampler;
    $("steps").placeholder = defaults.steps;
    $("guidance").placeholder = defaults.guidance;
    $("size").placeholder = defaults.size;
    const { jobs } = await api("/api/jobs");
    for (const job of jobs) {
      if (job.state === "done") addResults(job, true);
      else if (job.state === "queued" || job.state === "running") track(job);
    }
    $("empty").hidden = $("gallery").children.length > 0;
    refreshStatus();
    setInterval(refreshStatus, STATUS_MS);
  } catch (err) {
    $("server-status").textContent = "server unreachable";
    showError(err.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
