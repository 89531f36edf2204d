import { ArrowLeft, History, Lock, MessageSquare, Paperclip, Reply, Search, SendHorizontal, UserRound, X, Zap } from "lucide-react";
import {
  useCallback,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
  type KeyboardEvent,
  type UIEvent,
} from "react";
import { Link, useNavigate, useParams } from "react-router";
import type { Chat, QuickReply } from "../api/types";
import { AssigneePicker, LabelChips, StatusActions, StatusBadge } from "../components/ConversationBar";
import { InboxTabs, LabelFilter, StatusFilter } from "../components/InboxFilters";
import { LeadPanel } from "../components/LeadPanel";
import { MessageBubble } from "../components/MessageBubble";
import { MessageSearchResults } from "../components/MessageSearchResults";
import { Avatar, Banner, EmptyState, ErrorState, Spinner, selectClass } from "../components/ui";
import { useLang, useT } from "../i18n";
import { cx, dayLabel, formatBytes, isSameDay, shortTime } from "../lib/util";
import { messagesApi } from "../api/endpoints";
import { useChats } from "../stores/chats";
import { useDevices } from "../stores/devices";
import { useLeads } from "../stores/leads";
import { fillTemplate, matchQuickReplies, useQuickReplies } from "../stores/quickReplies";
import { live } from "../ws";

function chatTitle(c: Chat): string {
  return c.name || (c.phone ? `+${c.phone}` : c.jid.split("@")[0] || c.jid);
}

/** Whether the contact of a chat is typing now (re-renders when it lapses). */
function useTyping(chatId: string): boolean {
  const until = useChats((s) => s.typing[chatId]);
  const [, tick] = useState(0);
  useEffect(() => {
    if (!until) return;
    const id = setTimeout(() => tick((n) => n + 1), Math.max(0, until - Date.now()) + 50);
    return () => clearTimeout(id);
  }, [until]);
  return !!until && until > Date.now();
}

function TypingLabel({ testid }: { testid: string }) {
  const t = useT();
  return (
    <span className="truncate text-xs font-medium text-brand-600 italic" data-testid={testid}>
      {t("inbox.typing")}
    </span>
  );
}

/** Tells the contact the agent is typing: at most every few seconds, paused when idle. */
const TYPING_EVERY_MS = 5000;
const TYPING_IDLE_MS = 4000;
function useAgentTyping(chatId: string): { typed: () => void; stopped: () => void } {
  const last = useRef(0);
  const idle = useRef<ReturnType<typeof setTimeout> | null>(null);
  const stopped = useCallback(() => {
    if (idle.current) clearTimeout(idle.current);
    idle.current = null;
    if (last.current) {
      last.current = 0;
      void messagesApi.typing(chatId, "paused").catch(() => undefined);
    }
  }, [chatId]);
  const typed = useCallback(() => {
    const now = Date.now();
    if (now - last.current > TYPING_EVERY_MS) {
      last.current = now;
      void messagesApi.typing(chatId, "composing").catch(() => undefined);
    }
    if (idle.current) clearTimeout(idle.current);
    idle.current = setTimeout(stopped, TYPING_IDLE_MS);
  }, [chatId, stopped]);
  useEffect(() => stopped, [stopped]);
  return { typed, stopped };
}

// ---------- chat list ----------

function ChatListItem({ chat, active }: { chat: Chat; active: boolean }) {
  const lang = useLang((s) => s.lang);
  const t = useT();
  const unread = chat.unread_count > 0;
  const typing = useTyping(chat.id);
  return (
    <Link
      to={`/inbox/${chat.id}`}
      data-testid="chat-item"
      data-chat-id={chat.id}
      data-unread={chat.unread_count}
      className={cx(
        "flex items-center gap-3 border-b border-slate-100 px-3 py-3 hover:bg-slate-50",
        active && "bg-brand-50 hover:bg-brand-50",
      )}
    >
      <Avatar name={chat.name ?? chat.phone} seed={chat.id} />
      <div className="min-w-0 flex-1">
        <div className="flex items-baseline justify-between gap-2">
          <span className={cx("truncate text-sm", unread ? "font-semibold text-slate-900" : "font-medium text-slate-800")} data-testid="chat-item-name">
            {chatTitle(chat)}
          </span>
          <span className={cx("shrink-0 text-[11px]", unread ? "font-medium text-brand-600" : "text-slate-400")}>
            {shortTime(chat.last_message_at, lang, t)}
          </span>
        </div>
        <div className="flex items-center justify-between gap-2">
          {typing ? (
            <TypingLabel testid="chat-item-typing" />
          ) : (
            <span className="truncate text-xs text-slate-500" data-testid="chat-item-preview">
              {chat.last_message_preview ?? ""}
            </span>
          )}
          {chat.status && chat.status !== "open" && <StatusBadge status={chat.status} />}
          {unread && (
            <span
              className="inline-flex h-5 min-w-5 shrink-0 items-center justify-center rounded-full bg-brand-500 px-1.5 text-[11px] font-semibold text-white"
              data-testid="chat-unread-badge"
            >
              {chat.unread_count > 99 ? "99+" : chat.unread_count}
            </span>
          )}
        </div>
        {(chat.labels?.length ?? 0) > 0 && (
          <div className="mt-0.5 flex flex-wrap gap-1" data-testid="chat-item-labels">
            {chat.labels.slice(0, 3).map((l) => (
              <span key={l} className="rounded-full bg-sky-50 px-1.5 text-[10px] font-medium text-sky-800 ring-1 ring-sky-200">
                {l}
              </span>
            ))}
          </div>
        )}
      </div>
    </Link>
  );
}

function ChatList({ activeId }: { activeId: string | null }) {
  const t = useT();
  const byId = useChats((s) => s.byId);
  const listIds = useChats((s) => s.listIds);
  const filters = useChats((s) => s.filters);
  const loading = useChats((s) => s.loading);
  const loaded = useChats((s) => s.loaded);
  const loadingMore = useChats((s) => s.loadingMore);
  const error = useChats((s) => s.error);
  const cursor = useChats((s) => s.cursor);
  const devices = useDevices((s) => s.items);
  const importing = useChats((s) => s.importing);
  const [q, setQ] = useState(filters.q);
  const importingNames = devices.filter((d) => importing[d.id]).map((d) => d.name);
  const importingUnknown = Object.entries(importing).some(([id, on]) => on && !devices.some((d) => d.id === id));

  const chats = useMemo(() => listIds.map((id) => byId[id]).filter((c): c is Chat => !!c), [listIds, byId]);

  useEffect(() => {
    const chats = useChats.getState();
    if (!chats.loaded) void chats.loadChats();
    void chats.loadCounts();
    void chats.loadLabels();
  }, []);

  useEffect(() => {
    if (q === useChats.getState().filters.q) return;
    const id = setTimeout(() => void useChats.getState().setFilters({ q }), 300);
    return () => clearTimeout(id);
  }, [q]);

  const onScroll = (e: UIEvent<HTMLDivElement>) => {
    const el = e.currentTarget;
    if (cursor && !loadingMore && el.scrollHeight - el.scrollTop - el.clientHeight < 200) void useChats.getState().loadMoreChats();
  };

  const filtered = !!(filters.q || filters.device_id || filters.unread || filters.label || filters.tab !== "all");
  const messageQuery = filters.q.trim().length >= 2 ? filters.q.trim() : "";

  return (
    <div className="flex h-full min-h-0 flex-col">
      {(importingNames.length > 0 || importingUnknown) && (
        <div className="flex items-center gap-2 border-b border-sky-200 bg-sky-50 px-3 py-2 text-xs text-sky-900" data-testid="history-importing">
          <History className="h-4 w-4 shrink-0 animate-pulse" />
          <span>{t("inbox.historyImporting", { device: importingNames.join(", ") || "WhatsApp" })}</span>
        </div>
      )}
      <div className="space-y-2 border-b border-slate-200 p-3">
        <div className="relative">
          <Search className="pointer-events-none absolute top-1/2 left-2.5 h-4 w-4 -translate-y-1/2 text-slate-400" />
          <input
            type="search"
            value={q}
            onChange={(e) => setQ(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Escape" && q) {
                e.stopPropagation();
                setQ("");
                void useChats.getState().setFilters({ q: "" });
              }
            }}
            placeholder={t("inbox.search")}
            data-testid="chat-search"
            aria-label={t("inbox.search")}
            className="w-full rounded-lg border border-slate-200 bg-slate-50 py-2 pr-3 pl-8 text-sm focus:border-brand-500 focus:bg-white focus:outline-none focus:ring-2 focus:ring-brand-500/30"
          />
        </div>
        <InboxTabs />
        <div className="flex items-center gap-2">
          <StatusFilter />
          <LabelFilter />
        </div>
        <div className="flex items-center gap-2">
          {devices.length > 1 && (
            <select
              className={cx(selectClass, "py-1.5 text-xs")}
              value={filters.device_id}
              onChange={(e) => void useChats.getState().setFilters({ device_id: e.target.value })}
              data-testid="chat-device-filter"
            >
              <option value="">{t("inbox.allDevices")}</option>
              {devices.map((d) => (
                <option key={d.id} value={d.id}>
                  {d.name}
                </option>
              ))}
            </select>
          )}
          <button
            type="button"
            data-testid="chat-unread-filter"
            aria-pressed={filters.unread}
            onClick={() => void useChats.getState().setFilters({ unread: !filters.unread })}
            className={cx(
              "shrink-0 rounded-full border px-3 py-1 text-xs font-medium",
              filters.unread ? "border-brand-600 bg-brand-50 text-brand-800" : "border-slate-200 text-slate-600 hover:bg-slate-50",
            )}
          >
            {t("inbox.unreadOnly")}
          </button>
        </div>
      </div>
      <div className="min-h-0 flex-1 overflow-y-auto" onScroll={onScroll} data-testid="chat-list">
        {loading && !chats.length && !messageQuery ? (
          <Spinner />
        ) : error && !chats.length ? (
          <ErrorState error={error} onRetry={() => void useChats.getState().loadChats()} />
        ) : loaded && chats.length === 0 ? (
          filtered ? (
            <EmptyState title={t("inbox.noResults")} icon={<Search className="h-6 w-6" />} />
          ) : (
            <EmptyState title={t("inbox.empty")} hint={t("inbox.emptyHint")} icon={<MessageSquare className="h-6 w-6" />} />
          )
        ) : (
          <>
            {chats.map((c) => (
              <ChatListItem key={c.id} chat={c} active={c.id === activeId} />
            ))}
            {loadingMore && <Spinner />}
          </>
        )}
        {messageQuery && <MessageSearchResults q={messageQuery} />}
      </div>
    </div>
  );
}

// ---------- thread ----------

const drafts = new Map<string, string>();

/** "/sal" while choosing a quick reply: a slash at the start and no space yet. */
function quickQuery(text: string): string | null {
  const m = /^\/([\w-]*)$/.exec(text);
  return m ? (m[1] ?? "") : null;
}

function QuickReplyMenu({
  replies,
  active,
  onPick,
  onHover,
}: {
  replies: QuickReply[];
  active: number;
  onPick: (r: QuickReply) => void;
  onHover: (i: number) => void;
}) {
  const t = useT();
  const listRef = useRef<HTMLUListElement>(null);
  useEffect(() => {
    listRef.current?.querySelector(`[data-index="${active}"]`)?.scrollIntoView({ block: "nearest" });
  }, [active]);
  return (
    <div
      className="absolute right-0 bottom-full left-0 z-20 mb-2 overflow-hidden rounded-xl border border-slate-200 bg-white shadow-lg"
      data-testid="quick-reply-menu"
    >
      <div className="flex items-center justify-between border-b border-slate-100 px-3 py-1.5 text-[11px] font-semibold tracking-wide text-slate-500 uppercase">
        <span className="inline-flex items-center gap-1">
          <Zap className="h-3.5 w-3.5" />
          {t("inbox.quick.title")}
        </span>
        <Link to="/quick-replies" className="font-medium normal-case tracking-normal text-brand-700 hover:underline" data-testid="quick-reply-manage">
          {t("inbox.quick.manage")}
        </Link>
      </div>
      {replies.length === 0 ? (
        <p className="px-3 py-3 text-xs text-slate-500" data-testid="quick-reply-empty">
          {t("inbox.quick.empty")}
        </p>
      ) : (
        <ul ref={listRef} role="listbox" className="max-h-56 overflow-y-auto py-1">
          {replies.map((r, i) => (
            <li
              key={r.id}
              role="option"
              aria-selected={i === active}
              data-index={i}
              data-testid="quick-reply-option"
              data-shortcut={r.shortcut}
              onMouseDown={(e) => {
                e.preventDefault(); // keep the focus in the composer
                onPick(r);
              }}
              onMouseEnter={() => onHover(i)}
              className={cx("flex cursor-pointer items-baseline gap-2 px-3 py-1.5 text-sm", i === active && "bg-brand-50")}
            >
              <code className="shrink-0 text-xs font-semibold text-brand-800">/{r.shortcut}</code>
              <span className="truncate text-xs text-slate-600">{r.body}</span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function Composer({ chat }: { chat: Chat }) {
  const t = useT();
  const chatId = chat.id;
  const [text, setText] = useState(() => drafts.get(chatId) ?? "");
  const [file, setFile] = useState<File | null>(null);
  const [note, setNote] = useState(false);
  const [active, setActive] = useState(0);
  const [menuClosed, setMenuClosed] = useState(false);
  const fileRef = useRef<HTMLInputElement>(null);
  const areaRef = useRef<HTMLTextAreaElement>(null);
  const replies = useQuickReplies((s) => s.items);
  const lead = useLeads((s) => (chat.lead_id ? s.byId[chat.lead_id] : undefined));
  const replyTo = useChats((s) => s.replyTo[chatId]);
  const agentTyping = useAgentTyping(chatId);

  useEffect(() => {
    if (replyTo) areaRef.current?.focus();
  }, [replyTo]);

  useEffect(() => {
    setText(drafts.get(chatId) ?? "");
    setFile(null);
    setNote(false);
    areaRef.current?.focus();
  }, [chatId]);

  useLayoutEffect(() => {
    const el = areaRef.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 140)}px`;
  }, [text]);

  const typed = quickQuery(text);
  const menuOpen = typed !== null && !menuClosed && !file;
  const matches = useMemo(() => (typed === null ? [] : matchQuickReplies(replies, typed)), [replies, typed]);

  useEffect(() => {
    if (menuOpen && !useQuickReplies.getState().loaded && !useQuickReplies.getState().loading) void useQuickReplies.getState().load();
  }, [menuOpen]);
  useEffect(() => setActive(0), [typed]);

  const update = (v: string) => {
    setText(v);
    drafts.set(chatId, v);
    if (quickQuery(v) === null) setMenuClosed(false);
    if (!note && v.trim()) agentTyping.typed();
  };

  const insert = (r: QuickReply) => {
    const name = lead?.name || chat.name || (chat.phone ? `+${chat.phone}` : "");
    update(fillTemplate(r.body, { name }));
    requestAnimationFrame(() => {
      const el = areaRef.current;
      if (!el) return;
      el.focus();
      el.setSelectionRange(el.value.length, el.value.length);
    });
  };

  const send = () => {
    const chats = useChats.getState();
    if (note) {
      if (!text.trim()) return;
      void chats.sendNote(chatId, text);
    } else if (file) {
      void chats.sendFile(chatId, file, text);
      setFile(null);
      if (fileRef.current) fileRef.current.value = "";
    } else if (text.trim()) {
      void chats.sendText(chatId, text);
    } else return;
    agentTyping.stopped();
    update("");
    areaRef.current?.focus();
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.nativeEvent.isComposing) return;
    if (menuOpen) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const n = matches.length || 1;
        setActive((a) => (a + (e.key === "ArrowDown" ? 1 : n - 1)) % n);
        return;
      }
      if ((e.key === "Enter" || e.key === "Tab") && !e.shiftKey && matches.length) {
        e.preventDefault();
        insert(matches[Math.min(active, matches.length - 1)] as QuickReply);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        setMenuClosed(true);
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  };

  return (
    <div className={cx("border-t px-3 py-2", note ? "border-amber-300 bg-amber-50" : "border-slate-200 bg-slate-50")} data-testid="composer" data-mode={note ? "note" : "reply"}>
      <div className="mb-1.5 flex items-center gap-1" role="tablist">
        <button
          type="button"
          role="tab"
          aria-selected={!note}
          onClick={() => {
            setNote(false);
            areaRef.current?.focus();
          }}
          data-testid="composer-mode-reply"
          className={cx("rounded-md px-2.5 py-1 text-xs font-medium", !note ? "bg-white text-slate-900 shadow-sm" : "text-slate-500 hover:text-slate-800")}
        >
          {t("inbox.composer.reply")}
        </button>
        <button
          type="button"
          role="tab"
          aria-selected={note}
          onClick={() => {
            setNote(true);
            setFile(null);
            areaRef.current?.focus();
          }}
          data-testid="composer-mode-note"
          className={cx(
            "inline-flex items-center gap-1 rounded-md px-2.5 py-1 text-xs font-medium",
            note ? "bg-amber-200/70 text-amber-900 shadow-sm" : "text-slate-500 hover:text-slate-800",
          )}
        >
          <Lock className="h-3 w-3" />
          {t("inbox.composer.note")}
        </button>
      </div>
      {replyTo && !note && (
        <div className="mb-2 flex items-start gap-2 rounded-lg border-l-4 border-brand-500 bg-white px-3 py-2 text-sm" data-testid="composer-reply">
          <Reply className="mt-0.5 h-4 w-4 shrink-0 text-brand-600" />
          <div className="min-w-0 flex-1">
            <div className="text-xs font-semibold text-brand-700">
              {t("inbox.replyingTo", {
                name: replyTo.direction === "out" ? t("inbox.you") : chatTitle(chat),
              })}
            </div>
            <div className="truncate text-xs text-slate-600">{replyTo.body ?? replyTo.media?.file_name ?? ""}</div>
          </div>
          <button
            type="button"
            onClick={() => useChats.getState().setReplyTo(chatId, null)}
            aria-label={t("inbox.cancelReply")}
            title={t("inbox.cancelReply")}
            data-testid="composer-reply-cancel"
            className="rounded p-0.5 text-slate-400 hover:bg-slate-100"
          >
            <X className="h-4 w-4" />
          </button>
        </div>
      )}
      {file && !note && (
        <div className="mb-2 flex items-center gap-2 rounded-lg border border-slate-200 bg-white px-3 py-2 text-sm" data-testid="composer-file">
          <Paperclip className="h-4 w-4 text-slate-400" />
          <span className="min-w-0 flex-1 truncate">{file.name}</span>
          <span className="text-xs text-slate-400">{formatBytes(file.size)}</span>
          <button
            type="button"
            onClick={() => {
              setFile(null);
              if (fileRef.current) fileRef.current.value = "";
            }}
            aria-label={t("inbox.composer.removeFile")}
            className="rounded p-0.5 text-slate-400 hover:bg-slate-100"
          >
            <X className="h-4 w-4" />
          </button>
        </div>
      )}
      <div className="relative flex items-end gap-2">
        {menuOpen && <QuickReplyMenu replies={matches} active={active} onPick={insert} onHover={setActive} />}
        {!note && (
          <button
            type="button"
            onClick={() => fileRef.current?.click()}
            data-testid="composer-attach"
            title={t("inbox.composer.attach")}
            aria-label={t("inbox.composer.attach")}
            className="rounded-full p-2.5 text-slate-500 hover:bg-slate-200"
          >
            <Paperclip className="h-5 w-5" />
          </button>
        )}
        <input
          ref={fileRef}
          type="file"
          className="hidden"
          data-testid="composer-file-input"
          onChange={(e) => setFile(e.target.files?.[0] ?? null)}
        />
        <textarea
          ref={areaRef}
          rows={1}
          value={text}
          onChange={(e) => update(e.target.value)}
          onKeyDown={onKey}
          placeholder={note ? t("inbox.composer.notePlaceholder") : t("inbox.composer.placeholder")}
          aria-label={note ? t("inbox.composer.notePlaceholder") : t("inbox.composer.placeholder")}
          title={t("inbox.composer.hint")}
          data-testid="composer-input"
          className={cx(
            "max-h-36 min-h-[42px] flex-1 resize-none rounded-2xl border px-4 py-2.5 text-sm focus:outline-none focus:ring-2",
            note
              ? "border-amber-300 bg-amber-100/60 focus:border-amber-500 focus:ring-amber-400/40"
              : "border-slate-200 bg-white focus:border-brand-500 focus:ring-brand-500/30",
          )}
        />
        <button
          type="button"
          onClick={send}
          disabled={note ? !text.trim() : !file && !text.trim()}
          data-testid="composer-send"
          aria-label={note ? t("inbox.composer.addNote") : t("inbox.composer.send")}
          title={note ? t("inbox.composer.addNote") : t("inbox.composer.send")}
          className={cx(
            "rounded-full p-2.5 text-white disabled:bg-slate-300",
            note ? "bg-amber-500 hover:bg-amber-600" : "bg-brand-600 hover:bg-brand-700",
          )}
        >
          {note ? <Lock className="h-5 w-5" /> : <SendHorizontal className="h-5 w-5" />}
        </button>
      </div>
    </div>
  );
}

function Thread({ chat, onShowLead }: { chat: Chat; onShowLead: () => void }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const navigate = useNavigate();
  const thread = useChats((s) => s.threads[chat.id]);
  const device = useDevices((s) => s.items.find((d) => d.id === chat.device_id));
  const scrollRef = useRef<HTMLDivElement>(null);
  const snap = useRef<{ first: string | null; last: string | null; height: number; nearBottom: boolean }>({
    first: null,
    last: null,
    height: 0,
    nearBottom: true,
  });

  const items = thread?.items ?? [];
  const typing = useTyping(chat.id);
  const jump = useCallback((messageId: string) => useChats.getState().setFocus({ chatId: chat.id, messageId }), [chat.id]);
  const focus = useChats((s) => (s.focus?.chatId === chat.id ? s.focus.messageId : null));
  const [highlight, setHighlight] = useState<string | null>(null);

  // open: load history, tell the socket which thread to resync
  useEffect(() => {
    live.activeChatId = chat.id;
    snap.current = { first: null, last: null, height: 0, nearBottom: true };
    void useChats.getState().loadThread(chat.id);
    return () => {
      if (live.activeChatId === chat.id) live.activeChatId = null;
    };
  }, [chat.id]);

  // mark read when opened and whenever something new arrives while it is open
  useEffect(() => {
    if (chat.unread_count <= 0) return;
    const markIfVisible = () => {
      if (document.visibilityState === "visible") void useChats.getState().markRead(chat.id);
    };
    markIfVisible();
    document.addEventListener("visibilitychange", markIfVisible);
    return () => document.removeEventListener("visibilitychange", markIfVisible);
  }, [chat.id, chat.unread_count]);

  // keep the scroll position sensible as pages and messages come in
  useLayoutEffect(() => {
    const el = scrollRef.current;
    if (!el) return;
    const first = items[0]?.id ?? null;
    const lastItem = items[items.length - 1];
    const last = lastItem?.id ?? null;
    const prev = snap.current;
    if (prev.first === null && first !== null) {
      el.scrollTop = el.scrollHeight; // first render of the history
    } else if (first !== prev.first && last === prev.last) {
      el.scrollTop += el.scrollHeight - prev.height; // older page prepended
    } else if (last !== prev.last && (prev.nearBottom || lastItem?.direction === "out")) {
      el.scrollTop = el.scrollHeight; // new message at the bottom
    }
    snap.current = {
      first,
      last,
      height: el.scrollHeight,
      nearBottom: el.scrollHeight - el.scrollTop - el.clientHeight < 120,
    };
  }, [items]);

  // a search result: page back until the message is loaded, then show it
  useEffect(() => {
    if (!focus || !thread?.loaded) return;
    const el = scrollRef.current?.querySelector(`[data-message-id="${focus}"]`);
    if (el) {
      el.scrollIntoView({ block: "center" });
      setHighlight(focus);
      useChats.getState().setFocus(null);
    } else if (thread.cursor && !thread.loadingOlder) {
      void useChats.getState().loadOlder(chat.id);
    } else if (!thread.cursor) {
      useChats.getState().setFocus(null);
    }
  }, [focus, thread?.loaded, thread?.cursor, thread?.loadingOlder, items.length, chat.id]);

  // short histories: keep loading older pages until the view is filled
  useEffect(() => {
    const el = scrollRef.current;
    if (el && thread?.loaded && thread.cursor && !thread.loadingOlder && el.scrollHeight <= el.clientHeight + 20) {
      void useChats.getState().loadOlder(chat.id);
    }
  }, [thread?.loaded, thread?.cursor, thread?.loadingOlder, chat.id, items.length]);

  const onScroll = useCallback(
    (e: UIEvent<HTMLDivElement>) => {
      const el = e.currentTarget;
      snap.current.nearBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 120;
      snap.current.height = el.scrollHeight;
      if (el.scrollTop < 150) void useChats.getState().loadOlder(chat.id);
    },
    [chat.id],
  );

  return (
    <div className="flex h-full min-h-0 flex-col" data-testid="chat-thread" data-chat-id={chat.id}>
      <div className="flex items-center gap-3 border-b border-slate-200 bg-white px-3 py-2.5">
        <button
          type="button"
          onClick={() => navigate("/inbox")}
          className="rounded-lg p-1.5 text-slate-500 hover:bg-slate-100 md:hidden"
          aria-label={t("common.back")}
          data-testid="thread-back"
        >
          <ArrowLeft className="h-5 w-5" />
        </button>
        <Avatar name={chat.name ?? chat.phone} seed={chat.id} />
        <div className="min-w-0 flex-1">
          <div className="flex min-w-0 items-center gap-2">
            <span className="truncate font-semibold text-slate-900" data-testid="thread-title">{chatTitle(chat)}</span>
            <span className="shrink-0">
              <StatusBadge status={chat.status ?? "open"} />
            </span>
          </div>
          {typing ? (
            <div className="truncate">
              <TypingLabel testid="thread-typing" />
            </div>
          ) : (
            <div className="truncate text-xs text-slate-500">
              {chat.phone ? `+${chat.phone}` : chat.jid.endsWith("@lid") ? t("inbox.lidOnly") : chat.jid}
              {device ? ` · ${device.name}` : ""}
            </div>
          )}
        </div>
        <button
          type="button"
          onClick={onShowLead}
          className="inline-flex items-center gap-1.5 rounded-lg px-2.5 py-1.5 text-sm text-slate-600 hover:bg-slate-100 xl:hidden"
          data-testid="thread-show-lead"
        >
          <UserRound className="h-4 w-4" />
          <span className="hidden sm:inline">{t("inbox.showLead")}</span>
        </button>
      </div>
      <div className="flex flex-wrap items-center gap-2 border-b border-slate-100 bg-white px-3 py-1.5" data-testid="conversation-bar">
        <div className="min-w-0 flex-1">
          <LabelChips chat={chat} />
        </div>
        <AssigneePicker chat={chat} />
        <StatusActions chat={chat} />
      </div>
      {device && device.status !== "connected" && (
        <div className="px-3 pt-2">
          <Banner kind="warning" testid="thread-device-warning">
            {t("devices.notConnected")}
          </Banner>
        </div>
      )}
      <div ref={scrollRef} onScroll={onScroll} className="chat-bg min-h-0 flex-1 overflow-y-auto px-3 py-3 sm:px-6" data-testid="message-list">
        {!thread || (thread.loading && !thread.loaded) ? (
          <Spinner />
        ) : thread.error && !thread.loaded ? (
          <ErrorState error={thread.error} onRetry={() => void useChats.getState().loadThread(chat.id)} />
        ) : items.length === 0 ? (
          <EmptyState title={t("inbox.noMessages")} icon={<MessageSquare className="h-6 w-6" />} testid="thread-empty" />
        ) : (
          <div className="space-y-1.5">
            <div className="py-1 text-center text-xs text-slate-500">
              {thread.loadingOlder ? t("inbox.loadingOlder") : !thread.cursor ? t("inbox.beginning") : "\u00a0"}
            </div>
            {items.map((m, i) => {
              const prev = items[i - 1];
              const newDay = !prev || !isSameDay(new Date(prev.sent_at), new Date(m.sent_at));
              return (
                <div key={m.client_id ?? m.id}>
                  {newDay && (
                    <div className="my-3 flex justify-center">
                      <span className="rounded-lg bg-white/90 px-3 py-1 text-xs font-medium text-slate-600 shadow-sm">
                        {dayLabel(m.sent_at, lang, t)}
                      </span>
                    </div>
                  )}
                  <MessageBubble
                    m={m}
                    focused={m.id === highlight}
                    onJump={jump}
                    onRetry={() => void useChats.getState().retry(chat.id, m.id)}
                  />
                </div>
              );
            })}
          </div>
        )}
      </div>
      <Composer chat={chat} />
    </div>
  );
}

function ThreadLoader({ chatId, onShowLead }: { chatId: string; onShowLead: () => void }) {
  const t = useT();
  const chat = useChats((s) => s.byId[chatId]);
  const [missing, setMissing] = useState(false);

  useEffect(() => {
    setMissing(false);
    if (!useChats.getState().byId[chatId]) {
      void useChats.getState().fetchChat(chatId).then((c) => !c && setMissing(true));
    }
  }, [chatId]);

  if (chat) return <Thread chat={chat} onShowLead={onShowLead} />;
  if (missing) return <EmptyState title={t("common.notFound")} icon={<MessageSquare className="h-6 w-6" />} />;
  return <Spinner />;
}

export function InboxPage() {
  const t = useT();
  const navigate = useNavigate();
  const { chatId } = useParams();
  const chat = useChats((s) => (chatId ? s.byId[chatId] : undefined));
  const mergedTo = useChats((s) => (chatId ? s.mergedInto[chatId] : undefined));
  const [leadOpen, setLeadOpen] = useState(false);

  // the open chat was folded into the contact's phone chat: follow it
  useEffect(() => {
    if (mergedTo) navigate(`/inbox/${mergedTo}`, { replace: true });
  }, [mergedTo, navigate]);

  useEffect(() => setLeadOpen(false), [chatId]);

  // Esc closes the panel over the conversation (menus and fields inside it
  // take their own Esc first)
  useEffect(() => {
    if (!leadOpen) return;
    const onKey = (e: globalThis.KeyboardEvent) => {
      if (e.key === "Escape") setLeadOpen(false);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [leadOpen]);

  return (
    <div className="flex h-full min-h-0" data-testid="inbox-page">
      <section
        className={cx(
          "min-h-0 w-full shrink-0 border-r border-slate-200 bg-white md:flex md:w-80 md:flex-col",
          chatId ? "hidden" : "flex flex-col",
        )}
      >
        <ChatList activeId={chatId ?? null} />
      </section>
      <section className={cx("min-h-0 min-w-0 flex-1 flex-col", chatId ? "flex" : "hidden md:flex")}>
        {chatId ? (
          <ThreadLoader chatId={chatId} onShowLead={() => setLeadOpen(true)} />
        ) : (
          <div className="chat-bg flex h-full items-center justify-center">
            <EmptyState title={t("inbox.pick")} hint={t("inbox.pickHint")} icon={<MessageSquare className="h-6 w-6" />} testid="inbox-pick" />
          </div>
        )}
      </section>
      {chat && (
        <>
          <aside className="hidden w-72 shrink-0 overflow-y-auto border-l border-slate-200 bg-white xl:block">
            <LeadPanel chat={chat} />
          </aside>
          {leadOpen && (
            <div className="fixed inset-0 z-30 flex justify-end bg-slate-900/30 xl:hidden" onClick={() => setLeadOpen(false)} data-testid="lead-drawer">
              <aside className="h-full w-80 max-w-[90vw] overflow-y-auto bg-white shadow-xl" onClick={(e) => e.stopPropagation()}>
                <div className="flex justify-end p-2">
                  <button type="button" onClick={() => setLeadOpen(false)} className="rounded p-1 text-slate-500 hover:bg-slate-100" aria-label={t("common.close")}>
                    <X className="h-5 w-5" />
                  </button>
                </div>
                <LeadPanel chat={chat} />
              </aside>
            </div>
          )}
        </>
      )}
    </div>
  );
}
