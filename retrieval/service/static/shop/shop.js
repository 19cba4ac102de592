// The demo shop page: product list and the chat window. Everything the server sends is
// inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const messages = $("messages");

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function money(price, currency) {
  if (price === null || price === undefined) return "";
  return `${Number(price).toFixed(2)} ${currency || ""}`.trim();
}

function productCard(p) {
  const li = el("li", { class: "card", "data-product-id": p.id, "data-score": p.score });
  if (p.image_url) li.append(el("img", { src: p.image_url, alt: p.title, loading: "lazy" }));
  li.append(el("span", { class: "title" }, p.title));
  if (p.size) li.append(el("span", { class: "size" }, p.size));
  if (p.price !== null && p.price !== undefined) li.append(el("span", { class: "price" }, money(p.price, p.currency)));
  if (p.stock !== null && p.stock !== undefined) {
    li.append(el("span", { class: p.stock > 0 ? "stock" : "stock out" }, p.stock > 0 ? `${p.stock} in stock` : "out of stock"));
  }
  if (typeof p.score === "number") li.append(el("span", { class: "score" }, `match ${p.score.toFixed(2)}`));
  const bases = { "co-occurrence": "asked about together", "similarity": "similar", "best-stocked": "well stocked" };
  if (p.basis) li.append(el("span", { class: "basis" }, p.basis === "interest" ? `${p.score} shoppers asked` : bases[p.basis] || p.basis));
  const link = el("a", { href: "#", class: "similar" }, "Similar items");
  link.addEventListener("click", (e) => { e.preventDefault(); logClick(p.id); showSimilar(p); });
  li.append(link);
  const goes = el("a", { href: "#", class: "together" }, "Goes well with");
  goes.addEventListener("click", (e) => { e.preventDefault(); logClick(p.id); showTogether(p, li); });
  li.append(goes);
  return li;
}

// A click on a product is an interest the recommendations count (popular, goes well with).
// Best effort: a refused or failed log is not the shopper's problem.
function logClick(productId) {
  fetch("/shop/api/click", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ product_id: productId }),
  }).catch(() => {});
}

function scrollDown() { messages.scrollTop = messages.scrollHeight; }

function addMessage(kind, text, extra = {}) {
  const li = el("li", { class: `msg ${kind}`, ...extra }, text);
  messages.append(li);
  scrollDown();
  return li;
}

function addCards(products, payload) {
  const li = el("li", { class: "msg bot products", "data-query-id": payload.query_id, "data-kind": payload.kind || payload.followup });
  const list = el("ul", { class: "cards" });
  for (const p of products) list.append(productCard(p));
  li.append(list);
  if (payload.unsure) {
    // an unsure photo match: "none of these" asks for a person (the bot records a hand-off)
    const none = el("button", { type: "button", class: "none-of-these" }, payload.none_label || "None of these");
    none.addEventListener("click", async () => {
      if (busy) return;
      none.disabled = true;
      if (!(await askForPerson(none.textContent))) none.disabled = false;  // failed: try again
    });
    li.append(none);
  }
  messages.append(li);
  scrollDown();
}

function showBotMessages(items) {
  if (!items.length) { addMessage("bot", "…"); return; }
  let last = null;
  for (const m of items) {
    const custom = m.custom || null;
    if (m.text) last = addMessage("bot", m.text);
    if (!custom) continue;
    if (custom.type === "products" && Array.isArray(custom.products)) {
      addCards(custom.products, custom);
    } else if (last) {
      // metadata of the text just shown: scores and the FAQ entry stay inspectable
      if (custom.handoff) last.classList.add("handoff");
      if (custom.faq_id) last.dataset.faqId = custom.faq_id;
      if (typeof custom.score === "number") last.dataset.score = custom.score;
      if (custom.query_id) last.dataset.queryId = custom.query_id;
    }
  }
}

async function call(url, options) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", ...options });
  } catch (err) {
    throw new Error("The shop cannot be reached. Check your connection and try again.");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `error ${response.status}`;
    throw new Error(detail.charAt(0).toUpperCase() + detail.slice(1));
  }
  return body;
}

let busy = false;
function setBusy(on) {
  busy = on;
  $("send").disabled = on;
  $("chat-state").textContent = on ? "typing…" : "";
}

async function askForPerson(label) {
  addMessage("user", label);
  setBusy(true);
  try {
    showBotMessages((await call("/shop/api/person", { method: "POST" })).messages);
    return true;
  } catch (err) {
    addMessage("error", err.message);
    return false;
  } finally {
    setBusy(false);
  }
}

async function sendText(text) {
  addMessage("user", text);
  setBusy(true);
  try {
    const body = await call("/shop/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message: text }),
    });
    showBotMessages(body.messages);
  } catch (err) {
    addMessage("error", err.message);
  } finally {
    setBusy(false);
  }
}

async function sendPhoto(file) {
  const li = el("li", { class: "msg user" });
  const img = el("img", { class: "photo", alt: "your photo" });
  img.src = URL.createObjectURL(file);
  li.append(img);
  messages.append(li);
  scrollDown();
  setBusy(true);
  try {
    const form = new FormData();
    form.append("image", file, file.name || "photo");
    const body = await call("/shop/api/photo", { method: "POST", body: form });
    showBotMessages(body.messages);
  } catch (err) {
    addMessage("error", err.message);
  } finally {
    setBusy(false);
  }
}

async function showSimilar(p) {
  addMessage("user", `Similar to ${p.title}`);
  try {
    const body = await call(p.similar_url || `/v1/products/${encodeURIComponent(p.id)}/similar`);
    if (body.products.length) addCards(body.products, {});
    else addMessage("bot", "No similar products found.");
  } catch (err) {
    addMessage("error", err.message);
  }
}

// "Goes well with": a row right under the card (one row open at a time).
async function showTogether(p, card) {
  document.querySelectorAll(".together-row").forEach((row) => row.remove());
  const row = el("li", { class: "together-row", "data-product-id": p.id });
  try {
    const body = await call(`/shop/api/together/${encodeURIComponent(p.id)}`);
    const together = body.products.some((x) => x.basis === "co-occurrence");
    row.append(el("p", { class: "muted" }, !body.products.length ? "Nothing to suggest with it yet."
      : together ? `Shoppers who asked about ${p.title} also asked about:`
      : `Nothing is often asked about together with ${p.title} yet; similar products:`));
    const list = el("ul", { class: "cards" });
    for (const x of body.products) list.append(productCard(x));
    row.append(list);
  } catch (err) {
    row.append(el("p", { class: "error" }, err.message));
  }
  card.after(row);
}

async function loadPopular() {
  try {
    const body = await call("/shop/api/popular?days=7&k=8");
    const list = $("popular");
    for (const p of body.products) list.append(productCard(p));
    $("popular-status").textContent = body.basis === "interest"
      ? `Asked about by the most shoppers in the last ${body.window_days} days (since ${body.since.slice(0, 10)}), in stock.`
      : `Not enough questions in the last ${body.window_days} days yet to say what is popular: our best-stocked products.`;
  } catch (err) {
    $("popular-status").textContent = err.message;
  }
}

async function loadProducts() {
  try {
    const body = await call("/shop/api/products?limit=24");
    const list = $("products");
    for (const p of body.products) list.append(productCard(p));
    $("products-status").textContent = `${body.total} products`;
  } catch (err) {
    $("products-status").textContent = err.message;
  }
}

$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("message");
  const text = input.value.trim();
  if (!text || busy) return;
  input.value = "";
  sendText(text);
});

$("photo").addEventListener("change", (e) => {
  const file = e.target.files && e.target.files[0];
  e.target.value = "";
  if (file && !busy) sendPhoto(file);
});

// Replies from a person (the agent console) arrive by polling; only this page's conversation
// (the server reads it from the cookie) can be read.
let lastAgentReply = 0;
let polling = false;
async function pollAgentReplies() {
  if (polling || document.hidden) return;
  polling = true;
  try {
    const body = await call(`/shop/api/updates?after=${lastAgentReply}`);
    for (const m of body.messages) {
      addMessage("agent", m.text, { "data-agent": m.agent, "data-reply-id": m.id });
    }
    lastAgentReply = body.last;
  } catch (err) {
    // a missed poll is retried on the next tick; the shopper is not bothered with it
  } finally {
    polling = false;
  }
}
setInterval(pollAgentReplies, 2000);

addMessage("bot", "Hi! Ask me about delivery, orders, payment or our products, or send a photo of a product. 您好！可以用中文提问。");
loadProducts();
loadPopular();
