// Roost web page: choose a model, give an image (file, drop, paste or camera), show the top-k,
// and on request overlay the explanation (which parts of the image the answer depends on).
// A server with API keys answers 401: the page then asks for a key, keeps it for the tab
// (sessionStorage) and sends it as X-API-Key.
// Plain JavaScript, no build step; every URL is relative so the page works behind a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);

const ui = {
  model: $("model"),
  modelInfo: $("model-info"),
  topK: $("top-k"),
  dropZone: $("drop-zone"),
  choose: $("choose"),
  file: $("file"),
  cameraOpen: $("camera-open"),
  camera: $("camera"),
  video: $("camera-video"),
  capture: $("camera-capture"),
  cameraClose: $("camera-close"),
  status: $("status"),
  error: $("error"),
  errorText: $("error-text"),
  errorDetail: $("error-detail"),
  figure: $("figure"),
  preview: $("preview"),
  heat: $("heat"),
  heatmap: $("heatmap"),
  filename: $("filename"),
  result: $("result"),
  meta: $("meta"),
  uncertain: $("uncertain"),
  explainRow: $("explain-row"),
  explain: $("explain"),
  explainNote: $("explain-note"),
  predictions: $("predictions"),
  keyDialog: $("key-dialog"),
  keyText: $("key-text"),
  keyInput: $("key-input"),
  keyCancel: $("key-cancel"),
};

const MODEL_KEY = "roost.model";
const API_KEY = "roost.apiKey"; // in sessionStorage: gone when the tab closes
const KEY_NEEDED = "This server only answers requests that carry an API key. Ask whoever runs it for one.";
const KEY_REFUSED = "The server did not accept that key; it may have been replaced. Enter a current one.";
const READABLE_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF";

// What each API error code means to a person; the server's own message is shown as detail.
const ERROR_TEXT = {
  invalid_image: `This file is not an image Roost can read. Try a ${READABLE_FORMATS} photo.`,
  unsupported_media_type: `This file is not an image Roost can read. Try a ${READABLE_FORMATS} photo.`,
  payload_too_large: "This image is too large. Try a smaller photo or a screenshot of it.",
  model_not_found: "This model is no longer available. Reload the page to see the current models.",
  version_not_found: "This model version is no longer available. Reload the page and try again.",
  invalid_parameter: "That number of labels is not possible with this model.",
  not_ready: "This model is still loading. Try again in a moment.",
  inference_failed: "Something went wrong while classifying this image. Please try again.",
  deadline_exceeded: "The server took too long to answer. Please try again.",
  unauthorized: "This server needs an API key, and none was given. Reload the page to enter one.",
  forbidden: "This server does not allow this request.",
  bad_request: "The image did not reach the server intact. Please try again.",
};

// For explanations, the same codes mean something else than for a classification.
const EXPLAIN_ERROR_TEXT = {
  ...ERROR_TEXT,
  invalid_parameter: "This model's images are too small to explain.",
  inference_failed: "Something went wrong while explaining this answer. Please try again.",
};

let currentImage = null; // the File or Blob shown, classified again when the model changes
let previewUrl = null;
let cameraStream = null;
let requestId = 0;
let shown = null; // {model, version, label} of the answer on screen, which Explain explains
let heatmapUrl = null; // the explanation of `shown`, fetched once, toggled after that
let explainId = 0;
const resizeOf = {}; // model -> its card's resize ("stretch" or "center_crop")
let apiKey = readSavedKey(); // sent as X-API-Key once the server has asked for one
let keyPrompt = null; // the key dialog's answer while it is open, shared by every refused request
let settleKeyPrompt = null;

// ---- Models ----

async function loadModels() {
  let payload;
  try {
    payload = await fetchJson("v1/models");
  } catch (problem) {
    ui.model.replaceChildren(new Option("No models", ""));
    showError(problem);
    return;
  }
  const options = payload.models.map((m) => {
    const ready = m.default_version !== null;
    const option = new Option(ready ? `${m.name} (v${m.default_version})` : `${m.name} (not ready)`, m.name);
    option.disabled = !ready;
    return option;
  });
  if (!options.some((o) => !o.disabled)) {
    ui.model.replaceChildren(new Option("No models are serving yet", ""));
    setStatus("No models are serving yet. Reload the page in a moment.");
    return;
  }
  ui.model.replaceChildren(...options);
  ui.model.disabled = false;
  const saved = readSavedModel();
  const usable = options.find((o) => o.value === saved && !o.disabled) || options.find((o) => !o.disabled);
  ui.model.value = usable.value;
  await describeModel();
}

async function describeModel() {
  const name = ui.model.value;
  ui.modelInfo.textContent = "";
  try {
    const detail = await fetchJson(`v1/models/${encodeURIComponent(name)}`);
    if (ui.model.value !== name) return;
    resizeOf[name] = detail.resize;
    const classes = detail.labels.length;
    ui.topK.max = String(classes);
    ui.topK.value = String(Math.min(detail.config.default_top_k || 5, classes));
    const parts = [`Version ${detail.default_version}`, `${classes} labels`];
    if (detail.card && detail.card.dataset) parts.push(`trained on ${detail.card.dataset}`);
    ui.modelInfo.textContent = parts.join(" · ");
  } catch {
    ui.topK.removeAttribute("max");
    ui.topK.value = ""; // the server's default; a classify answer will say what is wrong
  }
}

function readSavedModel() {
  try {
    return localStorage.getItem(MODEL_KEY);
  } catch {
    return null; // storage can be off (private mode); the first model is fine then
  }
}

function saveModel(name) {
  try {
    localStorage.setItem(MODEL_KEY, name);
  } catch {
    // not remembered: nothing else depends on it
  }
}

// ---- Classify ----

async function classify(image) {
  currentImage = image;
  const name = ui.model.value;
  showPreview(image);
  hideError();
  resetExplanation();
  ui.result.hidden = true;
  if (!name) {
    showError(new PageError("There is no model to classify with yet. Reload the page in a moment."));
    return;
  }
  const id = ++requestId;
  const body = new FormData();
  body.append("file", image, image.name || "image");
  const params = new URLSearchParams();
  if (ui.topK.value) params.set("top_k", ui.topK.value);
  setStatus(`Classifying ${image.name || "the image"} with ${name}…`, true);
  const started = performance.now();
  try {
    const answer = await fetchJson(`v1/models/${encodeURIComponent(name)}/classify?${params}`, {
      method: "POST",
      body,
    });
    if (id !== requestId) return; // a newer image or model took over
    showResult(answer, performance.now() - started);
  } catch (problem) {
    if (id !== requestId) return;
    setStatus("");
    showError(problem);
  }
  revealResultPanel();
}

function showResult(answer, elapsedMs) {
  const predictions = answer.results[0].predictions;
  ui.meta.replaceChildren(
    text("Model "), strong(answer.model),
    text(" · version "), strong(String(answer.version)),
    text(" · "), strong(formatDuration(elapsedMs)),
  );
  ui.meta.dataset.model = answer.model;
  ui.meta.dataset.version = String(answer.version);
  ui.predictions.replaceChildren(...predictions.map(predictionItem));
  const top = predictions[0];
  // `uncertain`: the top score is below the model's min_confidence (absent: not configured).
  const uncertain = answer.results[0].uncertain === true;
  ui.uncertain.hidden = !uncertain;
  shown = { model: answer.model, version: answer.version, label: top.label };
  ui.result.hidden = false;
  const sure = uncertain ? ", but the model is not sure" : "";
  setStatus(`Most likely ${displayLabel(top.label)} (${formatScore(top.score)})${sure}.`);
}

function predictionItem(prediction) {
  const item = document.createElement("li");
  item.className = "prediction";
  const link = document.createElement("a");
  const explicit = safeUrl(prediction.url);
  link.href = explicit || wikipediaSearch(prediction.label);
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.className = "label";
  link.textContent = displayLabel(prediction.label);
  link.dataset.label = prediction.label;
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = explicit ? new URL(explicit).hostname : "search Wikipedia";
  const arrow = document.createElement("span");
  arrow.setAttribute("aria-hidden", "true");
  arrow.textContent = " ↗";
  const newTab = document.createElement("span");
  newTab.className = "visually-hidden";
  newTab.textContent = " (opens in a new tab)";
  where.append(arrow, newTab);
  link.append(" ", where);
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = formatScore(prediction.score);
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("aria-hidden", "true");
  const fill = document.createElement("span");
  fill.style.width = `${Math.max(0, Math.min(1, prediction.score)) * 100}%`;
  bar.append(fill);
  const head = document.createElement("div");
  head.className = "prediction-head";
  head.append(link, score);
  item.append(head, bar);
  return item;
}

function displayLabel(label) {
  return label.replace(/_/g, " ").trim(); // "Blue_jay" in labels.txt reads "Blue jay"
}

function wikipediaSearch(label) {
  return `https://en.wikipedia.org/w/index.php?search=${encodeURIComponent(displayLabel(label))}`;
}

function safeUrl(url) {
  if (!url) return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null; // a malformed link in labels.txt: fall back to a search
  }
}

// ---- Explain: the occlusion heatmap over the photo ----

function resetExplanation() {
  explainId++; // an explanation still on its way is for another answer now
  shown = null;
  if (heatmapUrl) URL.revokeObjectURL(heatmapUrl);
  heatmapUrl = null;
  ui.heatmap.removeAttribute("src");
  setExplanationShown(false);
  ui.explainNote.textContent = "";
  ui.explain.removeAttribute("aria-busy");
}

function setExplanationShown(on) {
  ui.heat.hidden = !on;
  ui.explain.setAttribute("aria-pressed", String(on));
}

async function toggleExplanation() {
  if (!shown || ui.explain.getAttribute("aria-busy") === "true") return;
  if (ui.explain.getAttribute("aria-pressed") === "true") {
    setExplanationShown(false);
    ui.explainNote.textContent = "";
    return;
  }
  if (!heatmapUrl && !(await fetchExplanation())) return;
  placeHeatmap();
  setExplanationShown(true);
  ui.explainNote.textContent = `Red marks the parts of the image that “${displayLabel(shown.label)}” depends on most: hiding them lowers its score the most.`;
}

// The heatmap for the answer on screen (same model and version); false when there is none.
async function fetchExplanation() {
  const id = ++explainId;
  const { model, version } = shown;
  const body = new FormData();
  body.append("file", currentImage, currentImage.name || "image");
  const params = new URLSearchParams({ format: "png", version: String(version) });
  ui.explain.setAttribute("aria-busy", "true");
  ui.explainNote.textContent = "Explaining: the model looks at the image again with each part hidden in turn…";
  hideError();
  try {
    const blob = await fetchBlob(`v1/models/${encodeURIComponent(model)}/explain?${params}`, {
      method: "POST",
      body,
    });
    if (id !== explainId) return false; // another image or answer took over
    heatmapUrl = URL.createObjectURL(blob);
    ui.heatmap.src = heatmapUrl;
    await ui.heatmap.decode().catch(() => {});
    return id === explainId;
  } catch (problem) {
    if (id !== explainId) return false;
    ui.explainNote.textContent = "";
    showError(problem);
    return false;
  } finally {
    if (id === explainId) ui.explain.removeAttribute("aria-busy");
  }
}

// The heatmap covers the model's input: the whole photo when the model stretches it, the
// centred crop of the model's aspect ratio when it crops (the heatmap has the input's size).
function placeHeatmap() {
  const photoW = ui.preview.naturalWidth;
  const photoH = ui.preview.naturalHeight;
  const inputW = ui.heatmap.naturalWidth;
  const inputH = ui.heatmap.naturalHeight;
  let box = { left: 0, top: 0, width: 100, height: 100 };
  if (resizeOf[shown.model] === "center_crop" && photoW && photoH && inputW && inputH) {
    const scale = Math.max(inputW / photoW, inputH / photoH);
    const width = Math.min(100, (inputW / scale / photoW) * 100);
    const height = Math.min(100, (inputH / scale / photoH) * 100);
    box = { left: (100 - width) / 2, top: (100 - height) / 2, width, height };
  }
  for (const [side, value] of Object.entries(box)) ui.heat.style[side] = `${value}%`;
}

// ---- HTTP and errors ----

class PageError extends Error {
  constructor(message, detail = "") {
    super(message);
    this.detail = detail;
  }
}

async function fetchJson(url, options) {
  let response;
  try {
    response = await send(url, options);
  } catch {
    throw new PageError("Roost cannot be reached. Check your connection, or whether the server is running, and try again.");
  }
  const payload = await response.json().catch(() => null);
  if (response.ok && payload) return payload;
  throw apiError(response, payload);
}

async function fetchBlob(url, options) {
  let response;
  try {
    response = await send(url, options);
  } catch {
    throw new PageError("Roost cannot be reached. Check your connection, or whether the server is running, and try again.");
  }
  if (response.ok) return response.blob();
  const payload = await response.json().catch(() => null);
  throw apiError(response, payload, EXPLAIN_ERROR_TEXT);
}

// `fetch` with the API key, if there is one; a 401 asks for a key (once for all the requests
// refused meanwhile) and sends the request again with it. Cancelled: the 401 is the answer.
async function send(url, options = {}) {
  for (;;) {
    const sent = apiKey;
    const headers = new Headers(options.headers);
    if (sent) headers.set("X-API-Key", sent);
    const response = await fetch(url, { ...options, headers });
    if (response.status !== 401) return response;
    if (apiKey !== sent) continue; // another request got a key meanwhile: try that one
    if ((await askForKey(sent ? KEY_REFUSED : KEY_NEEDED)) === null) return response;
  }
}

// The key the person enters, or null when they cancel.
function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    settleKeyPrompt = resolve;
  });
  ui.keyText.textContent = reason;
  ui.keyInput.value = "";
  ui.keyDialog.returnValue = "";
  ui.keyDialog.showModal();
  ui.keyInput.focus();
  return keyPrompt;
}

function onKeyDialogClosed() {
  const key = ui.keyDialog.returnValue === "use" ? ui.keyInput.value.trim() : "";
  ui.keyInput.value = "";
  apiKey = key || null; // cancelled: a refused key is forgotten too
  saveKey(apiKey);
  const settle = settleKeyPrompt;
  keyPrompt = settleKeyPrompt = null;
  if (settle) settle(apiKey);
}

function readSavedKey() {
  try {
    return sessionStorage.getItem(API_KEY);
  } catch {
    return null; // storage off: the key lives as long as the page
  }
}

function saveKey(key) {
  try {
    if (key) sessionStorage.setItem(API_KEY, key);
    else sessionStorage.removeItem(API_KEY);
  } catch {
    // kept in the page only
  }
}

function apiError(response, payload, texts = ERROR_TEXT) {
  const error = payload && payload.error;
  if (!error) {
    return new PageError(`The server answered with an unexpected error (HTTP ${response.status}). Please try again.`);
  }
  let message = texts[error.code] || `The server could not do this (${error.code}).`;
  if (error.code === "overloaded") {
    const wait = Number(response.headers.get("Retry-After")) || 1;
    message = `The server is busy right now. Try again in ${wait} second${wait === 1 ? "" : "s"}.`;
  }
  return new PageError(message, error.message);
}

function showError(problem) {
  ui.errorText.textContent = problem.message;
  ui.errorDetail.textContent = problem.detail ? `Details: ${problem.detail}` : "";
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
}

// ---- Image input: picker, drop, paste ----

function showPreview(image) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(image);
  ui.figure.hidden = false;
  ui.explainRow.hidden = false;
  ui.preview.src = previewUrl;
  ui.preview.alt = `The image being classified${image.name ? `: ${image.name}` : ""}`;
  ui.filename.textContent = image.name || "";
}

// On a phone the result panel is below the picker: scroll it up once it has something to show.
function revealResultPanel() {
  const panel = ui.status.closest(".panel");
  if (panel.getBoundingClientRect().top < window.innerHeight * 0.6) return;
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  panel.scrollIntoView({ block: "start", behavior: still ? "auto" : "smooth" });
}

function firstImageFile(files) {
  return Array.from(files || []).find((f) => f.type.startsWith("image/")) || (files && files[0]);
}

function onDrop(event) {
  event.preventDefault();
  ui.dropZone.classList.remove("dragging");
  const file = firstImageFile(event.dataTransfer && event.dataTransfer.files);
  if (file) classify(file);
}

function onPaste(event) {
  const file = firstImageFile(event.clipboardData && event.clipboardData.files);
  if (file) {
    event.preventDefault();
    classify(file);
  }
}

// ---- Camera ----

async function openCamera() {
  hideError();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError(new PageError(window.isSecureContext
      ? "This browser cannot use a camera. Choose an image instead."
      : "The camera only works on a secure (https://) page or on localhost. Choose an image instead."));
    return;
  }
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: { ideal: "environment" } },
      audio: false,
    });
  } catch (problem) {
    showError(new PageError(cameraMessage(problem), problem.message));
    return;
  }
  ui.video.srcObject = cameraStream;
  ui.camera.hidden = false;
  ui.dropZone.hidden = true;
  await ui.video.play().catch(() => {});
  ui.capture.focus();
}

function cameraMessage(problem) {
  switch (problem && problem.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera access is blocked. Allow the camera for this site in your browser's settings, or choose an image instead.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found on this device. Choose an image instead.";
    case "NotReadableError":
    case "AbortError":
      return "The camera could not be started; another app may be using it. Choose an image instead.";
    default:
      return "The camera could not be started. Choose an image instead.";
  }
}

function closeCamera() {
  if (cameraStream) cameraStream.getTracks().forEach((track) => track.stop());
  cameraStream = null;
  ui.video.srcObject = null;
  ui.camera.hidden = true;
  ui.dropZone.hidden = false;
}

function capturePhoto() {
  const canvas = document.createElement("canvas");
  canvas.width = ui.video.videoWidth;
  canvas.height = ui.video.videoHeight;
  if (!canvas.width || !canvas.height) {
    showError(new PageError("The camera has no picture yet. Wait a moment and capture again."));
    return;
  }
  canvas.getContext("2d").drawImage(ui.video, 0, 0);
  closeCamera();
  ui.cameraOpen.focus();
  canvas.toBlob((blob) => {
    if (blob) classify(new File([blob], "camera.jpg", { type: "image/jpeg" }));
  }, "image/jpeg", 0.92);
}

// ---- Small helpers ----

function setStatus(message, busy = false) {
  ui.status.textContent = message;
  ui.status.classList.toggle("busy", busy);
  ui.result.parentElement.setAttribute("aria-busy", String(busy));
}

function formatScore(score) {
  const percent = score * 100;
  if (percent > 0 && percent < 0.1) return "<0.1%";
  return `${percent.toFixed(1)}%`;
}

function formatDuration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function text(value) {
  return document.createTextNode(value);
}

function strong(value) {
  const element = document.createElement("strong");
  element.textContent = value;
  return element;
}

// ---- Wiring ----

ui.choose.addEventListener("click", () => ui.file.click());
ui.file.addEventListener("change", () => {
  const file = ui.file.files[0];
  if (file) classify(file);
  ui.file.value = ""; // choosing the same file again still classifies it
});
ui.model.addEventListener("change", async () => {
  saveModel(ui.model.value);
  await describeModel();
  if (currentImage) classify(currentImage);
});
ui.topK.addEventListener("change", () => {
  if (currentImage && ui.topK.checkValidity()) classify(currentImage);
});
ui.preview.addEventListener("load", revealResultPanel);
ui.explain.addEventListener("click", toggleExplanation);
ui.preview.addEventListener("error", () => {
  ui.figure.hidden = true; // not something the browser can show either
  ui.explainRow.hidden = true; // nor anything to lay an explanation over
});
ui.dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  ui.dropZone.classList.add("dragging");
});
ui.dropZone.addEventListener("dragleave", () => ui.dropZone.classList.remove("dragging"));
ui.dropZone.addEventListener("drop", onDrop);
// A file dropped beside the zone must not make the browser navigate away from the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());
document.addEventListener("paste", onPaste);
ui.cameraOpen.addEventListener("click", openCamera);
ui.capture.addEventListener("click", capturePhoto);
ui.cameraClose.addEventListener("click", () => {
  closeCamera();
  ui.cameraOpen.focus();
});
ui.camera.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    closeCamera();
    ui.cameraOpen.focus();
  }
});
window.addEventListener("pagehide", closeCamera);
ui.keyDialog.addEventListener("close", onKeyDialogClosed);
ui.keyCancel.addEventListener("click", () => ui.keyDialog.close("cancel"));

loadModels();
