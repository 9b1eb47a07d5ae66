// The chat demo: one room (chat:<room>), its history replayed on join, presence, and
// every message shown once, in order, across reconnects (the client resumes with `since`).
import { Shardcast } from "./shardcast-client.js";

const params = new URLSearchParams(location.search);
const user = params.get("user") || `guest-${Math.random().toString(36).slice(2, 7)}`;
const room = params.get("room") || "lobby";
const channel = `chat:${room}`;
const $ = (id) => document.getElementById(id);
$("title").textContent = `#${room}`;
$("me").textContent = `as ${user}`;

const scheme = location.protocol === "https:" ? "wss" : "ws";
// Development server (insecure = true): the user names itself in the URL.
const client = new Shardcast(`${scheme}://${location.host}/ws?user=${encodeURIComponent(user)}`);
// From the beginning: whatever the room's history still holds, then live.
const sub = client.subscribe(channel, { since: { offset: 0, epoch: "" } });

const list = $("messages");

function notice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

/** Inserts a message at its offset's place; a repeat (same offset) is ignored. */
function show(p) {
  if (list.querySelector(`li.msg[data-offset="${p.offset}"]`)) return;
  const li = document.createElement("li");
  li.className = "msg" + (p.from === user ? " mine" : "");
  li.dataset.offset = String(p.offset);
  const off = document.createElement("span");
  off.className = "off";
  off.textContent = `#${p.offset}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = p.from || "server";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = typeof p.data === "object" && p.data ? String(p.data.text) : String(p.data);
  li.append(off, who, text);
  const later = [...list.querySelectorAll("li.msg")].find((el) => Number(el.dataset.offset) > p.offset);
  list.insertBefore(li, later || null);
  list.scrollTop = list.scrollHeight;
}

const members = new Map(); // client id -> user
function renderMembers() {
  const users = [...new Set(members.values())].sort();
  $("members").replaceChildren(
    ...users.map((u) => {
      const li = document.createElement("li");
      li.textContent = u;
      return li;
    }),
  );
}

sub.on("publication", show);
sub.on("join", (m) => {
  if (!members.has(m.client)) notice(`${m.user} joined`);
  members.set(m.client, m.user);
  renderMembers();
});
sub.on("leave", (m) => {
  members.delete(m.client);
  if (![...members.values()].includes(m.user)) notice(`${m.user} left`);
  renderMembers();
});
sub.on("subscribed", async (e) => {
  // Before the replay: the position is still that of the last message shown.
  if (e.recovered && sub.position && e.offset > sub.position.offset) {
    notice(`reconnected: replaying ${e.offset - sub.position.offset} missed messages`);
  }
  try {
    const who = await sub.presence();
    members.clear();
    for (const m of who) members.set(m.client, m.user);
    renderMembers();
  } catch (err) {
    notice(`presence: ${err.code}`);
  }
});
sub.on("unrecovered", async (e) => {
  // Missed messages are gone from the replay: load what the history still has.
  notice(`could not replay everything (${e.reason}); loading the recent history`);
  const page = await sub.history({ since: Math.max(0, e.offset - 100), limit: 100 });
  for (const p of page.publications) if (p.offset <= e.offset) show(p);
});

let lastState = "";
client.on("state", (s) => {
  const el = $("status");
  el.dataset.state = s.state;
  el.textContent = s.state === "disconnected" && s.reconnect ? `offline, retrying in ${Math.ceil(s.delay / 1000)} s` : s.state;
  if (s.state === "disconnected" && lastState === "connected") notice(`connection lost (${s.reason || s.code})`);
  lastState = s.state;
});

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    await sub.publish({ text });
  } catch (err) {
    notice(`not sent (${err.code}): ${text}`);
  }
});

client.connect();
// For the browser test and for poking around in the console.
window.chat = { client, sub, user, channel };
