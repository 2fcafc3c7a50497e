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
// The inputs a model may take, each picked as a file: an image (sent as a data: URL) or a JSON
// layout (sent as an object). The server's help for each is in gambar.inputs.INPUTS.
const INPUT_FILES = {
  init: { accept: "image/*", help: "an image to start from; Strength sets how much changes" },
  mask: { accept: "image/*", help: "white where to draw anew, black where to keep the init image" },
  image: { accept: "image/*", help: "a reference image whose content new images share" },
  layout: { accept: ".json,application/json",
            help: 'a .json file: [{"phrase": "a red circle", "box": [x0, y0, x1, y1]}, ...], ' +
                  "corners as fractions of the side (0..1)" },
};
const chosen = new Map(); // input name -> promise of {value, note} or {error}: its picked file
// Job id -> the inputs this page sent with it: only their names come back, so "New seed" can
// send a job's inputs again only while the page still holds them (not after a reload).
const sentInputs = new Map();

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

// ---- inputs: a file picker for each input the chosen model takes -------------------------
function oneLine(text) {
  return text.replace(/\s+/g, " ").trim();
}

// A picked file as the request sends it: {value, note} or {error} (one line).
function readInput(name, file) {
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onerror = () => resolve({ error: oneLine(`cannot read ${file.name}: ${reader.error}`) });
    if (name !== "layout") {
      reader.onload = () => resolve({ value: reader.result, note: file.name });
      reader.readAsDataURL(file);
      return;
    }
    reader.onload = () => {
      let value;
      try {
        value = JSON.parse(reader.result);
      } catch (err) {
        resolve({ error: oneLine(`${file.name} is not valid JSON (${err.message})`) });
        return;
      }
      if (!Array.isArray(value)) {
        const error = `${file.name} is not a layout: it must be a JSON list [{"phrase": ..., "box": [...]}]`;
        resolve({ error });
        return;
      }
      const count = value.length;
      resolve({ value, note: `${file.name}: ${count} ${count === 1 ? "box" : "boxes"}` });
    };
    reader.readAsText(file);
  });
}

// Show what was picked for an input (a thumbnail of an image), or why it cannot be used.
function pick(node, name, file) {
  const row = node.querySelector(".input-chosen");
  const thumb = node.querySelector(".thumb");
  const note = node.querySelector(".input-note");
  row.hidden = thumb.hidden = true;
  thumb.removeAttribute("src");
  $(name).removeAttribute("aria-invalid");
  if (!file) {
    chosen.delete(name);
    return;
  }
  const reading = readInput(name, file);
  chosen.set(name, reading);
  reading.then((result) => {
    if (chosen.get(name) !== reading) return; // picked again meanwhile
    note.textContent = result.error || result.note;
    note.classList.toggle("error", Boolean(result.error));
    if (result.error) $(name).setAttribute("aria-invalid", "true");
    if (!result.error && name !== "layout") {
      thumb.src = result.value;
      thumb.hidden = false;
    }
    row.hidden = false;
  });
}

function inputControl(name) {
  const node = $("input-template").content.firstElementChild.cloneNode(true);
  const picker = node.querySelector("input");
  picker.id = picker.name = name;
  picker.accept = INPUT_FILES[name].accept;
  node.dataset.input = name;
  node.querySelector(".input-name").textContent = title(name);
  node.querySelector("label").title = INPUT_FILES[name].help;
  node.querySelector(".thumb").alt = `the chosen ${name} image`;
  // The note (the file picked, or why it cannot be used) describes the picker to screen readers.
  const note = node.querySelector(".input-note");
  note.id = `${name}-note`;
  picker.setAttribute("aria-describedby", note.id);
  const clear = node.querySelector(".clear");
  clear.setAttribute("aria-label", `Remove the ${name} file`);
  clear.addEventListener("click", () => {
    picker.value = "";
    pick(node, name, null);
    picker.focus();
  });
  picker.addEventListener("change", () => pick(node, name, picker.files[0]));
  return node;
}

// The chosen model's pickers; one the previous model also had is kept with its file.
function buildInputs(model) {
  const box = $("input-options");
  const names = model.inputs.filter((name) => INPUT_FILES[name]);
  const kept = new Map([...box.children].map((node) => [node.dataset.input, node]));
  for (const [name, node] of kept) {
    if (!names.includes(name)) {
      node.remove();
      chosen.delete(name);
    }
  }
  for (const name of names) box.append(kept.get(name) || inputControl(name));
}

// The picked inputs as the request sends them; null, with the reason shown, when a picked file
// cannot be used (then nothing is sent).
async function readInputs() {
  const inputs = {};
  for (const [name, reading] of chosen) {
    const result = await reading;
    if (result.error) {
      showError(result.error);
      $(name).focus();
      return null;
    }
    inputs[name] = result.value;
  }
  return inputs;
}

function buildForm(model) {
  buildOptions(model);
  buildInputs(model);
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
    buildForm(chosenModel());
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

// `inputs`: those in `body`, kept for the job's "New seed".
async function submit(body, inputs = {}) {
  showError("");
  try {
    const job = await api("/api/jobs", { method: "POST", body: JSON.stringify(body) });
    if (Object.keys(inputs).length) sentInputs.set(job.id, inputs);
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
  const cards = job.images.map((image) => card(job, image));
  if (append) cards.forEach((c) => gallery.append(c));
  else cards.reverse().forEach((c) => gallery.prepend(c));
  $("empty").hidden = gallery.children.length > 0;
}

function card(job, image) {
  const settings = job.settings;
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
  delete one.inputs; // only their names come back
  const variation = node.querySelector(".variation");
  const names = settings.inputs || [];
  const held = sentInputs.get(job.id) || {};
  const missing = names.filter((name) => !(name in held));
  if (missing.length) {
    variation.disabled = true;
    variation.title = `drawn from ${missing.join(", ")}, which this page no longer holds; ` +
                      "pick the files again";
  }
  variation.addEventListener("click", () => {
    const again = { ...one };
    delete again.seed; // the server draws a fresh random seed
    const inputs = Object.fromEntries(names.map((name) => [name, held[name]]));
    submit({ ...again, ...inputs }, inputs);
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
  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = readForm();
    const inputs = await readInputs();
    if (inputs) submit({ ...body, ...inputs }, inputs);
  });
  try {
    const served = await api("/api/models");
    models = served.models;
    $("n").max = served.limits.max_images;
    $("prompt").maxLength = served.limits.max_prompt_chars;
    buildForm(chosenModel());
    for (const m of models) $("model").append(new Option(m.name, m.name, m.default, m.default));
    $("model").addEventListener("change", () => buildForm(chosenModel()));
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
