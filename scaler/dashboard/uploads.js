// The Uploads panel and the upload form: each recent upload with its progress
// (succeeded / retrying / dead / cancelled), rows/s, ETA and state, buttons for
// the failed-row report, replay and cancel; the form's upload followed live.
// Everything goes through the scaler's /api/upload and /api/uploads routes,
// which pass through to the producer. Uses $ and el from app.js.
"use strict";

const UPLOADS_POLL_MS = 1000;
const PARTS = ["succeeded", "retrying", "dead", "cancelled"];
const ACTIVE = ["publishing", "interrupted", "queued", "running", "orphaned"];
const INTERRUPTED_HINT = "Send the file again with the same key: only the rows after the confirmed count are published, into the same record.";
const uploadKeys = new Map();  // file + type -> Idempotency-Key, kept until that upload is answered 200
let followedUpload = null;

function authHeaders() {
  const token = $("upload-token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "dash-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const count = Charts.count;
const seconds = (value) => (value === null || value === undefined ? "–" : value < 90 ? `${Math.round(value)} s` : `${Math.round(value / 60)} min`);

function progressText(item) {
  const finished = item.rows - item.pending;
  const extra = ["retrying", "dead", "cancelled"].filter((k) => item[k]).map((k) => `${count(item[k])} ${k}`);
  if (item.replays) extra.push(`replayed ${item.replays}×`);
  return [`${count(finished)} / ${count(item.rows)} rows`, ...extra, `${count(item.rows_per_second)} rows/s`, `ETA ${seconds(item.eta_seconds)}`].join(" · ");
}

function bar(item) {
  const box = el("div", { class: "upload-bar", role: "img" });
  box.setAttribute("aria-label", PARTS.map((k) => `${count(item[k])} ${k}`).join(", ") + ` of ${count(item.rows)}`);
  for (const part of PARTS) {
    const share = item.rows ? (100 * item[part]) / item.rows : 0;
    const segment = el("span", { class: `part ${part}`, "data-part": part });
    segment.style.width = `${share}%`;
    box.append(segment);
  }
  return box;
}

function actionButton(label, action, item) {
  const button = el("button", { type: "button", class: `upload-action ${action}`, "data-action": action }, label);
  button.setAttribute("aria-label", `${label}: ${item.file_name}`);
  button.addEventListener("click", () => uploadAction(action, item));
  return button;
}

function actions(item) {
  const box = el("div", { class: "upload-actions" });
  if (item.dead) {
    const link = el("a", { class: "button csv", href: `/api${item.failed_rows_url}`, download: `failed-rows-${item.id}.csv` }, "Failed rows (CSV)");
    box.append(link, actionButton("Replay dead rows", "replay", item));
  }
  if (ACTIVE.includes(item.state)) box.append(actionButton("Cancel", "cancel", item));
  return box;
}

function renderUpload(item) {
  const node = el("li", { class: `upload state-${item.state}` + (item.id === followedUpload ? " followed" : ""), "data-upload": item.id, "data-file": item.file_name },
    el("div", { class: "upload-head" },
      el("strong", { class: "upload-file" }, item.file_name), " ",
      el("span", { class: "upload-type" }, item.job_type), " ",
      el("span", { class: "badge", "data-field": "state" }, item.state)),
    bar(item),
    el("p", { class: "upload-progress", "data-field": "progress" }, progressText(item)),
    actions(item));
  if (item.state === "interrupted") {
    node.append(el("p", { class: "warn", "data-field": "interrupted" }, `Publishing interrupted at ${count(item.confirmed)} of ${count(item.rows)} rows: ${item.publish_error}`),
      el("p", { class: "hint", "data-field": "interrupted-hint" }, INTERRUPTED_HINT));
  }
  if (item.orphaned_reason) node.append(el("p", { class: "warn", "data-field": "orphaned" }, `No worker can take these rows: ${item.orphaned_reason}`));
  if (item.failed_rows_truncated) node.append(el("p", { class: "hint" }, `Failed-row details kept for the first ${count(item.failed_rows_cap)} rows only.`));
  return node;
}

function renderUploads(items) {
  const list = $("uploads");
  list.replaceChildren(...(items.length ? items.map(renderUpload) : [el("li", { class: "empty" }, "No upload yet.")]));
  const followed = items.find((item) => item.id === followedUpload);
  if (followed) {
    const line = $("upload-progress");
    line.textContent = `${followed.file_name}: ${followed.state} · ${progressText(followed)}`;
    line.className = "answer " + (followed.dead ? "error" : "ok");
  }
}

async function pollUploads() {
  try {
    const response = await fetch("/api/uploads?limit=20", { cache: "no-store" });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(body.error);
    renderUploads(body.uploads);
  } catch (error) {
    $("uploads").replaceChildren(el("li", { class: "empty warn" }, `Upload records unavailable: ${error.message}`));
  }
}

async function uploadAction(action, item) {
  const answer = $("uploads-answer");
  try {
    const response = await fetch(`/api/uploads/${encodeURIComponent(item.id)}/${action}`, { method: "POST", headers: authHeaders() });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(`${action} refused (${response.status}): ${body.error}`);
    answer.textContent = action === "replay" ? `${item.file_name}: ${body.replayed} dead rows re-queued.` : `${item.file_name}: cancelled; rows in progress finish, the rest are skipped.`;
    answer.className = "answer ok";
  } catch (error) {
    answer.textContent = error.message.startsWith(action) ? error.message : "The scaler is unreachable; nothing changed.";
    answer.className = "answer error";
  }
  pollUploads();
}

async function submitUpload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const answer = $("upload-answer");
  if (!file) {
    answer.textContent = "Choose a CSV file first.";
    answer.className = "answer error";
    return;
  }
  const type = $("upload-type").value;
  const identity = `${file.name}|${file.size}|${file.lastModified}|${type}`;
  const key = uploadKeys.get(identity) || newKey();
  uploadKeys.set(identity, key);  // a retry of this file after a 503 or a lost connection finishes the same upload
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("job_type", type);
  $("upload-button").disabled = true;
  answer.textContent = `Uploading ${file.name}…`;
  answer.className = "answer";
  try {
    const response = await fetch("/api/upload", { method: "POST", body: form, headers: { ...authHeaders(), "Idempotency-Key": key } });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (response.ok) {
      uploadKeys.delete(identity);
      followedUpload = body.upload_id;
      answer.textContent = `Queued ${count(body.rows)} rows for ${body.job_type} (upload ${body.upload_id}).`;
      answer.className = "answer ok";
      pollUploads();
    } else {
      const again = [503, 429].includes(response.status) ? " Upload the same file again to finish this upload." : "";
      answer.textContent = `Refused (${response.status}): ${body.error}${again}`;
      answer.className = "answer error";
    }
  } catch (error) {
    answer.textContent = "The connection was lost; upload the same file again to finish this upload (nothing is counted twice).";
    answer.className = "answer error";
  } finally {
    $("upload-button").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("upload-form").addEventListener("submit", submitUpload);
  pollUploads();
  setInterval(pollUploads, UPLOADS_POLL_MS);
});
