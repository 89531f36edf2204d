import { create } from "zustand";
import { ApiError } from "../api/client";
import { chatsApi, messagesApi, type ChatListParams } from "../api/endpoints";
import type { Chat, ChatStatus, Message, MessageStatus, MessageType, PresenceState, UnreadCounts } from "../api/types";
import { onSessionEnd } from "../lib/bus";
import {
  TEMP_PREFIX,
  applyStatus,
  chatInView,
  chatMatches,
  chatOrder,
  mergeAll,
  mergeStatus,
  upsertInto,
  type InboxTab,
  type UiMessage,
} from "../lib/reconcile";
import { uuid } from "../lib/util";
import { useAuth } from "./auth";

export const PAGE_SIZE = 50;

export interface Thread {
  items: UiMessage[];
  cursor: string | null;
  loaded: boolean;
  loading: boolean;
  loadingOlder: boolean;
  error: unknown;
}

export interface ChatFilters {
  q: string;
  device_id: string;
  unread: boolean;
  /** Mine / Unassigned / All */
  tab: InboxTab;
  /** "" = every status */
  status: ChatStatus | "";
  label: string;
}

export type ChatPatch = { status?: ChatStatus; assigned_to?: string | null; labels?: string[] };

/** A message to show (and highlight) once its chat's thread is open. */
export interface Focus {
  chatId: string;
  messageId: string;
}

interface ChatsState {
  byId: Record<string, Chat>;
  /** ids in the list for the current filters, newest activity first */
  listIds: string[];
  filters: ChatFilters;
  cursor: string | null;
  loading: boolean;
  loadingMore: boolean;
  loaded: boolean;
  error: unknown;
  threads: Record<string, Thread>;
  /** statuses that arrived before their message (keyed by message id) */
  earlyStatus: Record<string, MessageStatus>;
  /** chats folded into another (a contact's LID chat into its phone chat): old id → new id */
  mergedInto: Record<string, string>;
  /** chats with something unread per inbox tab (under the status and device filters) */
  counts: UnreadCounts | null;
  /** labels in use in the account */
  labels: string[];
  focus: Focus | null;
  /** the message the composer answers, per chat */
  replyTo: Record<string, UiMessage | undefined>;
  /** chats whose contact is typing: until when (ms) */
  typing: Record<string, number>;
  /** devices whose WhatsApp history is being imported */
  importing: Record<string, boolean>;

  setReplyTo: (chatId: string, m: UiMessage | null) => void;
  setPresence: (chatId: string, state: PresenceState) => void;
  setImporting: (deviceId: string, on: boolean) => void;
  react: (m: UiMessage, emoji: string) => Promise<void>;
  editMessage: (m: UiMessage, body: string) => Promise<void>;
  revokeMessage: (m: UiMessage) => Promise<void>;

  setFilters: (f: Partial<ChatFilters>) => Promise<void>;
  loadChats: (opts?: { soft?: boolean }) => Promise<void>;
  loadMoreChats: () => Promise<void>;
  fetchChat: (id: string) => Promise<Chat | null>;
  upsertChat: (chat: Chat) => void;
  patchChat: (id: string, patch: Partial<Chat>) => void;

  loadThread: (chatId: string) => Promise<void>;
  loadOlder: (chatId: string) => Promise<void>;
  upsertMessage: (m: UiMessage) => void;
  setStatus: (messageId: string, chatId: string, status: MessageStatus) => void;

  loadCounts: () => Promise<void>;
  /** reload the counts soon (many frames in a burst cost one request) */
  scheduleCounts: () => void;
  loadLabels: () => Promise<void>;
  updateChat: (id: string, patch: ChatPatch) => Promise<void>;
  setFocus: (focus: Focus | null) => void;

  sendText: (chatId: string, body: string) => Promise<void>;
  sendNote: (chatId: string, body: string) => Promise<void>;
  sendFile: (chatId: string, file: File, caption: string) => Promise<void>;
  retry: (chatId: string, tempOrId: string) => Promise<void>;
  markRead: (chatId: string) => Promise<void>;
  reset: () => void;
}

const emptyThread: Thread = { items: [], cursor: null, loaded: false, loading: false, loadingOlder: false, error: null };

const initial = {
  byId: {} as Record<string, Chat>,
  listIds: [] as string[],
  filters: { q: "", device_id: "", unread: false, tab: "all", status: "open", label: "" } as ChatFilters,
  cursor: null,
  loading: false,
  loadingMore: false,
  loaded: false,
  error: null,
  threads: {} as Record<string, Thread>,
  earlyStatus: {} as Record<string, MessageStatus>,
  mergedInto: {} as Record<string, string>,
  counts: null as UnreadCounts | null,
  labels: [] as string[],
  focus: null as Focus | null,
  replyTo: {} as Record<string, UiMessage | undefined>,
  typing: {} as Record<string, number>,
  importing: {} as Record<string, boolean>,
};

// WhatsApp says "paused" when typing stops; a lost one must not show forever
export const TYPING_MS = 15_000;

let listSeq = 0; // ignore answers to superseded list requests
let countsTimer: ReturnType<typeof setTimeout> | null = null;
const COUNTS_DELAY_MS = 400;

const me = (): string | null => useAuth.getState().user?.id ?? null;

export function listParams(f: ChatFilters): ChatListParams {
  return {
    q: f.q,
    device_id: f.device_id,
    unread: f.unread,
    status: f.status,
    assigned_to: f.tab === "mine" ? "me" : f.tab === "unassigned" ? "none" : undefined,
    label: f.label,
  };
}

function typeOfFile(file: File): MessageType {
  if (file.type.startsWith("image/")) return "image";
  if (file.type.startsWith("video/")) return "video";
  if (file.type.startsWith("audio/")) return "audio";
  return "document";
}

export function previewOf(m: Pick<Message, "type" | "body" | "media">): string {
  if (m.body) return m.body;
  return m.media?.file_name ?? `[${m.type}]`;
}

export const useChats = create<ChatsState>((set, get) => {
  const sortIds = (ids: string[], byId: Record<string, Chat>) =>
    ids.slice().sort((a, b) => {
      const ca = byId[a];
      const cb = byId[b];
      return ca && cb ? chatOrder(ca, cb) : 0;
    });

  const patchThread = (chatId: string, fn: (t: Thread) => Thread) => {
    const t = get().threads[chatId] ?? emptyThread;
    set({ threads: { ...get().threads, [chatId]: fn(t) } });
  };

  /** POST a message for an optimistic entry already in the thread. */
  const deliver = async (chatId: string, temp: UiMessage) => {
    try {
      const file = temp.local?.file;
      const clientId = temp.client_id ?? uuid();
      const msg =
        temp.direction === "note"
          ? await chatsApi.addNote(chatId, { body: temp.body ?? "", client_id: clientId })
          : file
            ? await messagesApi.sendMedia({
                chat_id: chatId,
                file,
                caption: temp.body ?? undefined,
                client_id: clientId,
                reply_to: temp.reply_to ?? undefined,
              })
            : await messagesApi.send({
                chat_id: chatId,
                body: temp.body ?? "",
                client_id: clientId,
                reply_to: temp.reply_to ?? undefined,
              });
      get().upsertMessage(msg);
    } catch (e) {
      const error = e instanceof ApiError ? e.code : "network";
      patchThread(chatId, (t) => ({
        ...t,
        items: t.items.map((m) => (m.id === temp.id ? { ...m, local: { ...m.local, error } } : m)),
      }));
    }
  };

  const optimistic = (chatId: string, body: string, file?: File, note = false): UiMessage | null => {
    const chat = get().byId[chatId];
    if (!chat) return null;
    const answering = note ? undefined : get().replyTo[chatId];
    if (answering) set({ replyTo: { ...get().replyTo, [chatId]: undefined } });
    const clientId = uuid();
    const now = new Date().toISOString();
    const preview = file && file.type.startsWith("image/") && typeof URL.createObjectURL === "function"
      ? URL.createObjectURL(file)
      : undefined;
    const m: UiMessage = {
      id: TEMP_PREFIX + clientId,
      chat_id: chatId,
      device_id: chat.device_id,
      wa_message_id: null,
      direction: note ? "note" : "out",
      type: file ? typeOfFile(file) : "text",
      body: body || null,
      media: file ? { url: "", mime_type: file.type || null, file_name: file.name, size: file.size } : null,
      status: "pending",
      sender_jid: null,
      sender_name: null,
      sent_at: now,
      client_id: clientId,
      author_id: note ? me() : null,
      reply_to: answering?.id ?? null,
      quoted: answering
        ? {
            message_id: answering.id,
            wa_message_id: answering.wa_message_id,
            type: answering.type,
            body: answering.body,
            sender_jid: answering.sender_jid,
            from_me: answering.direction === "out",
            deleted: false,
          }
        : null,
      local: file ? { file, preview } : {},
    };
    get().upsertMessage(m);
    // a note is for the team: the inbox keeps showing the conversation's last message
    if (!note) get().patchChat(chatId, { last_message_at: now, last_message_preview: previewOf(m) });
    return m;
  };

  return {
    ...initial,

    setFilters: async (f) => {
      const before = get().filters;
      set({ filters: { ...before, ...f } });
      if (f.status !== undefined && f.status !== before.status) get().scheduleCounts();
      if (f.device_id !== undefined && f.device_id !== before.device_id) get().scheduleCounts();
      await get().loadChats();
    },

    loadChats: async (opts) => {
      const seq = ++listSeq;
      set(opts?.soft ? { error: null } : { loading: true, error: null });
      try {
        const page = await chatsApi.list({ ...listParams(get().filters), limit: PAGE_SIZE });
        if (seq !== listSeq) return;
        const byId = { ...get().byId };
        for (const c of page.items) byId[c.id] = c;
        set({
          byId,
          listIds: page.items.map((c) => c.id),
          cursor: page.next_cursor,
          loading: false,
          loaded: true,
        });
      } catch (error) {
        if (seq === listSeq) set({ loading: false, error });
      }
    },

    loadMoreChats: async () => {
      const { cursor, loadingMore, filters } = get();
      if (!cursor || loadingMore) return;
      const seq = listSeq;
      set({ loadingMore: true });
      try {
        const page = await chatsApi.list({ ...listParams(filters), limit: PAGE_SIZE, cursor });
        if (seq !== listSeq) return;
        const byId = { ...get().byId };
        const ids = get().listIds.slice();
        for (const c of page.items) {
          byId[c.id] = c;
          if (!ids.includes(c.id)) ids.push(c.id);
        }
        set({ byId, listIds: ids, cursor: page.next_cursor, loadingMore: false });
      } catch (error) {
        set({ loadingMore: false, error });
      }
    },

    fetchChat: async (id) => {
      try {
        const chat = await chatsApi.get(id);
        set({ byId: { ...get().byId, [id]: chat } });
        return chat;
      } catch {
        return null;
      }
    },

    upsertChat: (chat) => {
      const { byId, filters, loaded } = get();
      let { listIds } = get();
      const nextById = { ...byId, [chat.id]: { ...byId[chat.id], ...chat } };
      // one person, one chat: the server folded a chat opened by the contact's
      // LID into this one (same device, same LID or address)
      const folded = Object.values(byId).filter(
        (c) => c.id !== chat.id && c.device_id === chat.device_id && ((!!chat.lid && c.lid === chat.lid) || c.jid === chat.jid),
      );
      if (folded.length) {
        const threads = { ...get().threads };
        const mergedInto = { ...get().mergedInto };
        for (const c of folded) {
          delete nextById[c.id];
          delete threads[c.id];
          mergedInto[c.id] = chat.id;
        }
        const gone = new Set(folded.map((c) => c.id));
        listIds = listIds.filter((id) => !gone.has(id));
        set({ threads, mergedInto });
        // its messages moved here: fetch the thread again if it is showing
        if (threads[chat.id]?.loaded) void get().loadThread(chat.id);
      }
      let ids = listIds;
      const inList = listIds.includes(chat.id);
      const merged = nextById[chat.id] as Chat;
      const matches = chatMatches(merged, filters, me());
      // a chat already listed stays (e.g. just read under the unread filter),
      // unless it left the tab, status or label shown (resolved, reassigned…)
      if (!inList && matches && loaded) ids = [...listIds, chat.id];
      else if (inList && !chatInView(merged, filters, me())) ids = listIds.filter((x) => x !== chat.id);
      set({ byId: nextById, listIds: sortIds(ids, nextById) });
    },

    patchChat: (id, patch) => {
      const c = get().byId[id];
      if (!c) return;
      get().upsertChat({ ...c, ...patch });
    },

    loadThread: async (chatId) => {
      const cur = get().threads[chatId];
      if (cur?.loading) return;
      patchThread(chatId, (t) => ({ ...t, loading: !t.loaded, error: null }));
      try {
        const page = await chatsApi.messages(chatId, { limit: PAGE_SIZE });
        const fromServer: UiMessage[] = page.items.slice().reverse();
        patchThread(chatId, (t) => {
          // keep what arrived meanwhile (frames, optimistic sends) and older pages
          return {
            ...t,
            items: mergeAll(fromServer, t.items),
            cursor: t.loaded && t.cursor !== null && t.items.length > fromServer.length ? t.cursor : page.next_cursor,
            loaded: true,
            loading: false,
          };
        });
        const early = get().earlyStatus;
        for (const m of page.items) if (early[m.id]) get().setStatus(m.id, chatId, early[m.id] as MessageStatus);
      } catch (error) {
        patchThread(chatId, (t) => ({ ...t, loading: false, error }));
      }
    },

    loadOlder: async (chatId) => {
      const t = get().threads[chatId];
      if (!t || !t.cursor || t.loadingOlder || t.loading) return;
      patchThread(chatId, (x) => ({ ...x, loadingOlder: true }));
      try {
        const page = await chatsApi.messages(chatId, { limit: PAGE_SIZE, cursor: t.cursor });
        patchThread(chatId, (x) => ({
          ...x,
          items: mergeAll(x.items, page.items.slice().reverse()),
          cursor: page.next_cursor,
          loadingOlder: false,
        }));
      } catch (error) {
        patchThread(chatId, (x) => ({ ...x, loadingOlder: false, error }));
      }
    },

    upsertMessage: (m) => {
      const t = get().threads[m.chat_id];
      if (!t) return; // not open yet: it will be fetched when opened
      let msg = m;
      const early = get().earlyStatus[m.id];
      if (early) {
        msg = { ...m, status: mergeStatus(m.status, early) };
        const rest = { ...get().earlyStatus };
        delete rest[m.id];
        set({ earlyStatus: rest });
        // merge goes through mergeStatus, so an early "read" survives a later "sent"
      }
      patchThread(m.chat_id, (x) => ({ ...x, items: upsertInto(x.items, msg) }));
    },

    setStatus: (messageId, chatId, status) => {
      const t = get().threads[chatId];
      const next = t ? applyStatus(t.items, messageId, status) : null;
      if (t && next) {
        if (next !== t.items) patchThread(chatId, (x) => ({ ...x, items: applyStatus(x.items, messageId, status) ?? x.items }));
        return;
      }
      // not known yet (the send answer or new_message frame is still on its way)
      const early = { ...get().earlyStatus, [messageId]: status };
      const keys = Object.keys(early);
      if (keys.length > 500) for (const k of keys.slice(0, keys.length - 500)) delete early[k];
      set({ earlyStatus: early });
    },

    loadCounts: async () => {
      const { status, device_id } = get().filters;
      try {
        const counts = await chatsApi.counts({ status, device_id });
        set({ counts });
      } catch {
        /* the next frame or list load tries again */
      }
    },

    scheduleCounts: () => {
      if (countsTimer) return;
      countsTimer = setTimeout(() => {
        countsTimer = null;
        void get().loadCounts();
      }, COUNTS_DELAY_MS);
    },

    loadLabels: async () => {
      try {
        const { items } = await chatsApi.labels();
        set({ labels: items.map((x) => x.label) });
      } catch {
        /* the filter just offers fewer labels */
      }
    },

    updateChat: async (id, patch) => {
      const before = get().byId[id];
      if (before) get().upsertChat({ ...before, ...patch });
      try {
        const chat = await chatsApi.update(id, patch);
        get().upsertChat(chat);
        get().scheduleCounts();
        if (patch.labels) void get().loadLabels();
      } catch (e) {
        if (before) get().upsertChat(before);
        throw e;
      }
    },

    setFocus: (focus) => set({ focus }),

    setReplyTo: (chatId, m) => set({ replyTo: { ...get().replyTo, [chatId]: m ?? undefined } }),

    setPresence: (chatId, state) => {
      const typing = { ...get().typing };
      if (state === "composing") typing[chatId] = Date.now() + TYPING_MS;
      else delete typing[chatId];
      set({ typing });
    },

    setImporting: (deviceId, on) => set({ importing: { ...get().importing, [deviceId]: on } }),

    react: async (m, emoji) => {
      get().upsertMessage(await messagesApi.react(m.id, emoji));
    },

    editMessage: async (m, body) => {
      get().upsertMessage(await messagesApi.edit(m.id, body));
    },

    revokeMessage: async (m) => {
      get().upsertMessage(await messagesApi.revoke(m.id));
    },

    sendNote: async (chatId, body) => {
      const text = body.trim();
      if (!text) return;
      const m = optimistic(chatId, text, undefined, true);
      if (m) await deliver(chatId, m);
    },

    sendText: async (chatId, body) => {
      const text = body.trim();
      if (!text) return;
      const m = optimistic(chatId, text);
      if (m) await deliver(chatId, m);
    },

    sendFile: async (chatId, file, caption) => {
      const m = optimistic(chatId, caption.trim(), file);
      if (m) await deliver(chatId, m);
    },

    retry: async (chatId, id) => {
      const m = get().threads[chatId]?.items.find((x) => x.id === id);
      if (!m) return;
      patchThread(chatId, (t) => ({
        ...t,
        items: t.items.map((x) => (x.id === id ? { ...x, local: { ...x.local, error: undefined } } : x)),
      }));
      await deliver(chatId, m); // same client_id: the server keeps one message
    },

    markRead: async (chatId) => {
      const c = get().byId[chatId];
      if (c && c.unread_count > 0) get().patchChat(chatId, { unread_count: 0 });
      try {
        await chatsApi.markRead(chatId);
        get().scheduleCounts();
      } catch {
        /* a later open or a chat_read frame fixes it */
      }
    },

    reset: () => {
      listSeq++;
      if (countsTimer) clearTimeout(countsTimer);
      countsTimer = null;
      for (const t of Object.values(get().threads))
        for (const m of t.items) if (m.local?.preview) URL.revokeObjectURL(m.local.preview);
      set({ ...initial });
    },
  };
});

onSessionEnd(() => useChats.getState().reset());
