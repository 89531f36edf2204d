// Pure message reconciliation: optimistic messages (keyed by client_id) meet
// the server's copies arriving by HTTP and WebSocket in any order.
import type { Chat, Message, MessageStatus } from "../api/types";

export interface LocalState {
  /** client-side send error (the request never reached the server or was refused) */
  error?: string;
  /** object URL of the file being sent, kept so the preview does not flicker */
  preview?: string;
  /** the file, kept for a retry */
  file?: File;
}

export type UiMessage = Message & { local?: LocalState };

const RANK: Record<MessageStatus, number> = {
  pending: 0,
  received: 0,
  sent: 1,
  delivered: 2,
  read: 3,
  failed: -1,
};

/** Status never goes backwards; `failed` beats pending/sent, loses to delivered/read. */
export function mergeStatus(a: MessageStatus, b: MessageStatus): MessageStatus {
  if (a === b) return a;
  if (b === "failed") return a === "delivered" || a === "read" ? a : "failed";
  if (a === "failed") return b === "delivered" || b === "read" ? b : "failed";
  return RANK[b] > RANK[a] ? b : a;
}

export function sameMessage(a: Message, b: Message): boolean {
  if (a.id === b.id) return true;
  if (a.client_id && b.client_id && a.client_id === b.client_id) return true;
  return !!(a.wa_message_id && b.wa_message_id && a.wa_message_id === b.wa_message_id && a.device_id === b.device_id);
}

export const TEMP_PREFIX = "local-";

export function isTemp(m: Message): boolean {
  return m.id.startsWith(TEMP_PREFIX);
}

/**
 * Merge two copies of one message. The server's copy wins on every field (the
 * optimistic copy only contributes its local state); status never regresses.
 */
/** A file that arrived (or can never arrive) stays so: a late "pending" or
 * "failed" copy of the message does not undo it. */
export function mergeMedia(old: Message["media"], incoming: Message["media"]): Message["media"] {
  if (!incoming) return old;
  if (!old) return incoming;
  const final = (s: string | undefined) => (s ?? "ready") === "ready" || s === "too_large";
  return final(old.status) && !final(incoming.status) ? old : incoming;
}

export function mergeMessage(old: UiMessage, incoming: UiMessage): UiMessage {
  const oldTemp = isTemp(old);
  const incTemp = isTemp(incoming);
  // b overrides a
  const [a, b] = !oldTemp && incTemp ? [incoming, old] : [old, incoming];
  const preview = old.local?.preview ?? incoming.local?.preview;
  const local: LocalState | undefined =
    oldTemp && incTemp ? { ...old.local, ...incoming.local } : preview ? { preview } : undefined;
  return {
    ...a,
    ...b,
    wa_message_id: b.wa_message_id ?? a.wa_message_id,
    media: b.deleted ? null : oldTemp || incTemp ? (b.media ?? a.media) : mergeMedia(old.media, incoming.media),
    // deleted for everyone: the text is gone, whatever an older copy had
    body: b.deleted ? null : (b.body ?? a.body),
    client_id: b.client_id ?? a.client_id,
    status: mergeStatus(old.status, incoming.status),
    local,
  };
}

function byTime(a: Message, b: Message): number {
  const ta = Date.parse(a.sent_at);
  const tb = Date.parse(b.sent_at);
  return (Number.isNaN(ta) ? 0 : ta) - (Number.isNaN(tb) ? 0 : tb);
}

/** Insert or merge `msg` into an ascending-by-time list; returns a new list. */
export function upsertInto(list: UiMessage[], msg: UiMessage): UiMessage[] {
  const idx = list.findIndex((m) => sameMessage(m, msg));
  if (idx >= 0) {
    const old = list[idx] as UiMessage;
    const merged = mergeMessage(old, msg);
    const next = list.slice();
    next[idx] = merged;
    return merged.sent_at === old.sent_at ? next : next.sort(byTime);
  }
  // append fast-path
  const last = list[list.length - 1];
  if (!last || byTime(last, msg) <= 0) return [...list, msg];
  return [...list, msg].sort(byTime);
}

export function mergeAll(list: UiMessage[], more: UiMessage[]): UiMessage[] {
  return more.reduce((acc, m) => upsertInto(acc, m), list);
}

export function applyStatus(list: UiMessage[], messageId: string, status: MessageStatus): UiMessage[] | null {
  const idx = list.findIndex((m) => m.id === messageId);
  if (idx < 0) return null;
  const old = list[idx] as UiMessage;
  const s = mergeStatus(old.status, status);
  if (s === old.status) return list;
  const next = list.slice();
  next[idx] = { ...old, status: s };
  return next;
}

/** Chats: newest activity first, nulls last. */
export function chatOrder(a: Chat, b: Chat): number {
  const ta = a.last_message_at ? Date.parse(a.last_message_at) : -Infinity;
  const tb = b.last_message_at ? Date.parse(b.last_message_at) : -Infinity;
  if (ta === tb) return 0;
  return tb > ta ? 1 : -1;
}

export type InboxTab = "mine" | "unassigned" | "all";

export interface ListFilters {
  q: string;
  device_id: string;
  unread: boolean;
  tab?: InboxTab;
  status?: Chat["status"] | "";
  label?: string;
}

/** Whether a chat belongs in the inbox tab and status/label filter (search aside). */
export function chatInView(chat: Chat, f: ListFilters, me: string | null): boolean {
  if (f.tab === "mine" && (!me || chat.assigned_to !== me)) return false;
  if (f.tab === "unassigned" && chat.assigned_to) return false;
  if (f.status && (chat.status ?? "open") !== f.status) return false;
  if (f.label && !(chat.labels ?? []).includes(f.label)) return false;
  return true;
}

export function chatMatches(chat: Chat, f: ListFilters, me: string | null = null): boolean {
  if (!chatInView(chat, f, me)) return false;
  if (f.device_id && chat.device_id !== f.device_id) return false;
  if (f.unread && chat.unread_count <= 0) return false;
  const q = f.q.trim().toLocaleLowerCase();
  if (!q) return true;
  return [chat.name, chat.phone, chat.jid].some((v) => (v ?? "").toLocaleLowerCase().includes(q));
}

/** The status shown to the user: a local send error counts as failed. */
export function displayStatusOf(m: UiMessage): MessageStatus {
  return m.local?.error ? "failed" : m.status;
}
