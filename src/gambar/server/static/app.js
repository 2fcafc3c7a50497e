// gambar's page: submit jobs to /api/jobs, poll their progress, show results. No build step.
"use strict";

const POLL_MS = 400; // a job's progress
const STATUS_MS = 5000; // the queue length in the header
const $ = (id) => document.getElementById(id);
// Fields of every request; the chosen model's options come from GET /api/models.
const NUMBER_FIELDS = ["n", "seed"];
const TEXT_FIELDS = ["prompt", "model"];
// A family declares its options most used first: its first number options go beside n and seed.
const MAIN_NUMBERS = 2;

let models = []; // GET /api/models: name, family, defaults, options (specs), inputs
let shown = []; // the option specs whose controls are on the form now

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

// ---- the form ----------------------------------------------------------------------------
function chosenModel() {
  return models.find((m) => m.name === $("model").value) ||
         models.find((m) => m.default) || models[0];
}

function title(name) {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// One control for one option spec: a list for choices, a box for true/false, a text area for
// free text, a number field with the spec's bounds for numbers. Its id is the option's name.
function control(spec) {
  let input;
  if (spec.choices) {
    input = document.createElement("select");
    for (const choice of spec.choices) input.append(new Option(choice, choice));
    input.value = spec.default;
  } else if (spec.kind === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = spec.default;
  } else if (spec.kind === "str") {
    input = document.createElement("textarea");
    input.rows = 1;
    if (spec.max_chars) input.maxLength = spec.max_chars;
    input.placeholder = spec.help;
  } else {
    input = document.createElement("input");
    input.type = "number";
    if (spec.low !== null) input.min = spec.low;
    if (spec.high !== null) input.max = spec.high;
    input.step = spec.kind === "int" ? "1" : "any";
    input.placeholder = spec.default;
  }
  input.id = input.name = spec.name;
  const label = document.createElement("label");
  label.className = "option";
  label.title = spec.help;
  label.append(title(spec.name) + " ", input);
  return label;
}

function isNumber(spec) {
  return (spec.kind === "int" || spec.kind === "float") && !spec.choices;
}

// The chosen model's controls; values typed for an option the new model also has are kept.
function buildOptions(model) {
  const kept = {};
  for (const spec of shown) kept[spec.name] = readOption(spec);
  document.querySelectorAll("#form .option").forEach((node) => node.remove());
  let main = 0;
  for (const spec of model.options) {
    const node = control(spec);
    if (spec.kind === "str" && !spec.choices) $("text-options").append(node);
    else if (isNumber(spec) && main++ < MAIN_NUMBERS) $("main-options").append(node);
    else $("more-options").append(node);
    if (kept[spec.name] !== undefined) setOption(spec, kept[spec.name]);
  }
  shown = model.options;
}

// An option's value as the request sends it; undefined when left to the model's default.
function readOption(spec) {
  const input = $(spec.name);
  if (spec.kind === "bool") return input.checked === spec.default ? undefined : input.checked;
  if (isNumber(spec)) {
    const value = input.value.trim();
    return value === "" ? undefined : Number(value);
  }
  return input.value === "" ? undefined : input.value;
}

function setOption(spec, value) {
  if (spec.kind === "bool") $(spec.name).checked = Boolean(value);
  else $(spec.name).value = value;
}

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
  for (const spec of shown) {
    const value = readOption(spec);
    if (value !== undefined) body[spec.name] = value;
  }
  return body;
}

function fillForm(settings) {
  if (models.some((m) => m.name === settings.model) && settings.model !== $("model").value) {
    $("model").value = settings.model;
    buildOptions(chosenModel());
  }
  for (const name of [...TEXT_FIELDS, ...NUMBER_FIELDS]) {
    if (settings[name] !== undefined && settings[name] !== null) $(name).value = settings[name];
  }
  for (const spec of shown) {
    if (settings[spec.name] !== undefined) setOption(spec, settings[spec.name]);
  }
  // Open "More options" when something in it differs from the model's default.
  const hidden = shown.filter((spec) => $("more").contains($(spec.name)));
  if (hidden.some((spec) => settings[spec.name] !== undefined &&
                            settings[spec.name] !== spec.default)) {
    $("more").open = true;
  }
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
// "seed 7 · steps 20 · guidance 2 · tiny": the model's main options, and any other option
// not at its default.
function summary(s, seed) {
  const parts = [`seed ${seed}`];
  const model = models.find((m) => m.name === s.model);
  let main = 0;
  for (const spec of model ? model.options : []) {
    const value = s[spec.name];
    const isMain = isNumber(spec) && main++ < MAIN_NUMBERS;
    if (value === undefined || value === "" || (!isMain && value === spec.default)) continue;
    parts.push(spec.kind === "str" && !spec.choices ? `${spec.name.replace(/_/g, " ")}: ${value}`
                                                    : `${spec.name.replace(/_/g, " ")} ${value}`);
  }
  if (s.output_size) parts.push(`resized to ${s.output_size} px`);
  if (s.inputs && s.inputs.length) parts.push(`with ${s.inputs.join(", ")}`);
  parts.push(s.model);
  return parts.join(" · ");
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
  delete one.inputs; // only their names come back; the page cannot send them again
  const variation = node.querySelector(".variation");
  if (settings.inputs && settings.inputs.length) {
    variation.disabled = true;
    variation.title = `drawn from ${settings.inputs.join(", ")}, which this page cannot send`;
  }
  variation.addEventListener("click", () => {
    const again = { ...one };
    delete again.seed; // the server draws a fresh random seed
    submit(again);
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
    const served = await api("/api/models");
    models = served.models;
    $("n").max = served.limits.max_images;
    $("prompt").maxLength = served.limits.max_prompt_chars;
    buildOptions(chosenModel());
    for (const m of models) $("model").append(new Option(m.name, m.name, m.default, m.default));
    $("model").addEventListener("change", () => buildOptions(chosenModel()));
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
