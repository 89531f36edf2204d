import {
  AlertCircle,
  Ban,
  Check,
  CheckCheck,
  Clock,
  Download,
  FileText,
  FileWarning,
  ImageOff,
  Loader2,
  Lock,
  Pencil,
  Reply,
  RotateCcw,
  SmilePlus,
  Trash2,
} from "lucide-react";
import { useEffect, useState } from "react";
import { messagesApi } from "../api/endpoints";
import type { Message, MessageStatus } from "../api/types";
import { useLang, useT, type TKey } from "../i18n";
import { downloadMedia, mediaUrl } from "../lib/media";
import { displayStatusOf, isTemp, type UiMessage } from "../lib/reconcile";
import { useChats } from "../stores/chats";
import { clockTime, cx, errorText, formatBytes } from "../lib/util";
import { useUsers } from "../stores/users";
import { useToasts } from "../stores/toasts";

/** The reactions the picker offers (WhatsApp's defaults). */
export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
// WhatsApp lets a message be edited for 15 minutes after it was sent
const EDIT_WINDOW_MS = 15 * 60 * 1000;


export function StatusTicks({ status }: { status: MessageStatus }) {
  const t = useT();
  const label = t(`inbox.status.${status}` as TKey);
  const common = { "aria-label": label, "data-testid": "message-status", "data-status": status } as const;
  switch (status) {
    case "pending":
      return <Clock {...common} className="h-3.5 w-3.5 text-slate-400" />;
    case "sent":
      return <Check {...common} className="h-3.5 w-3.5 text-slate-500" />;
    case "delivered":
      return <CheckCheck {...common} className="h-4 w-4 text-slate-500" />;
    case "read":
      return <CheckCheck {...common} className="h-4 w-4 text-sky-500" />;
    case "failed":
      return <AlertCircle {...common} className="h-4 w-4 text-red-500" />;
    default:
      return null;
  }
}

function useObjectUrl(m: UiMessage, enabled: boolean): { url: string | null; error: boolean } {
  const [state, setState] = useState<{ url: string | null; error: boolean }>({ url: m.local?.preview ?? null, error: false });
  const preview = m.local?.preview;
  const temp = isTemp(m);
  useEffect(() => {
    if (preview) {
      setState({ url: preview, error: false });
      return;
    }
    if (temp || !enabled) return;
    let alive = true;
    mediaUrl(m.id).then(
      (url) => alive && setState({ url, error: false }),
      () => alive && setState({ url: null, error: true }),
    );
    return () => {
      alive = false;
    };
  }, [m.id, preview, temp, enabled]);
  return state;
}

function DownloadButton({ m, invert }: { m: UiMessage; invert?: boolean }) {
  const t = useT();
  const [busy, setBusy] = useState(false);
  if (isTemp(m)) return null;
  return (
    <button
      type="button"
      data-testid="message-download"
      disabled={busy}
      onClick={async () => {
        setBusy(true);
        try {
          await downloadMedia(m.id, m.media?.file_name ?? `${m.type}-${m.id}`);
        } catch {
          /* the preview shows the error state */
        } finally {
          setBusy(false);
        }
      }}
      className={cx(
        "inline-flex items-center gap-1 rounded-md px-2 py-1 text-xs font-medium",
        invert ? "bg-black/40 text-white hover:bg-black/60" : "text-brand-700 hover:bg-black/5",
      )}
      title={t("inbox.download")}
    >
      <Download className="h-3.5 w-3.5" />
      {t("inbox.download")}
    </button>
  );
}

// the server lets a download pending this long be retried (MESSAGING_MEDIA_STALE_SECONDS)
const STALLED_AFTER_MS = 10 * 60 * 1000;

/** The file is not here (yet): still downloading, failed (with a retry), or too large. */
function MediaState({ m }: { m: UiMessage }) {
  const t = useT();
  const [busy, setBusy] = useState(false);
  const [retryError, setRetryError] = useState<string | null>(null);
  const status = m.media?.status ?? "ready";
  const name = m.media?.file_name ?? t(`inbox.type.${m.type}` as TKey);
  if (status === "too_large") {
    return (
      <div className="flex w-56 items-center gap-2 rounded-lg bg-amber-50 p-3 text-xs text-amber-800" data-testid="message-media-too-large">
        <FileWarning className="h-4 w-4 shrink-0" />
        <div className="min-w-0">
          <div className="truncate font-medium">{name}</div>
          <div>
            {t("inbox.media.tooLarge")}
            {m.media?.size ? ` (${formatBytes(m.media.size)})` : ""}
          </div>
          <div className="text-amber-700/80">{t("inbox.media.openOnPhone")}</div>
        </div>
      </div>
    );
  }
  const retry = async () => {
    setBusy(true);
    setRetryError(null);
    try {
      useChats.getState().upsertMessage(await messagesApi.retryMedia(m.id));
    } catch (e) {
      setRetryError(`${t("inbox.media.retryFailed")}: ${errorText(t, e)}`);
    } finally {
      setBusy(false);
    }
  };
  const retryButton = (
    <>
      <button
        type="button"
        onClick={retry}
        disabled={busy}
        data-testid="message-media-retry"
        className="inline-flex items-center justify-center gap-1 self-start rounded-md bg-white px-2 py-1 font-medium text-red-700 ring-1 ring-red-200 hover:bg-red-100 disabled:opacity-60"
      >
        <RotateCcw className={cx("h-3.5 w-3.5", busy && "animate-spin")} />
        {t("inbox.media.retry")}
      </button>
      {retryError && <div data-testid="message-media-retry-error">{retryError}</div>}
    </>
  );
  if (status === "pending") {
    // a download this old has stalled (its worker stopped mid-way): offer a retry
    const stalled = Date.now() - Date.parse(m.sent_at) > STALLED_AFTER_MS;
    return (
      <div className="flex w-56 flex-col gap-1.5 rounded-lg bg-black/5 p-3 text-xs text-slate-600" data-testid="message-media-pending">
        <div className="flex items-center gap-2">
          <Loader2 className="h-4 w-4 shrink-0 animate-spin" />
          <div className="min-w-0">
            <div className="truncate font-medium">{name}</div>
            <div>{t("inbox.media.pending")}</div>
          </div>
        </div>
        {stalled && retryButton}
      </div>
    );
  }
  return (
    <div className="flex w-56 flex-col gap-1.5 rounded-lg bg-red-50 p-3 text-xs text-red-800" data-testid="message-media-failed" title={m.media?.error ?? undefined}>
      <div className="flex items-center gap-2">
        <ImageOff className="h-4 w-4 shrink-0" />
        <div className="min-w-0">
          <div className="truncate font-medium">{name}</div>
          <div>{t("inbox.media.failed")}</div>
        </div>
      </div>
      {retryButton}
    </div>
  );
}

function MediaView({ m }: { m: UiMessage }) {
  const t = useT();
  const visual = m.type === "image" || m.type === "sticker" || m.type === "video" || m.type === "audio";
  const ready = (m.media?.status ?? "ready") === "ready";
  const { url, error } = useObjectUrl(m, visual && ready);
  if (!ready) return <MediaState m={m} />;
  if (!visual) {
    return (
      <div className="flex items-center gap-3 rounded-lg bg-black/5 p-2.5" data-testid="message-document">
        <FileText className="h-8 w-8 shrink-0 text-slate-500" />
        <div className="min-w-0 flex-1">
          <div className="truncate text-sm font-medium">{m.media?.file_name ?? t("inbox.type.document")}</div>
          <div className="text-xs text-slate-500">{formatBytes(m.media?.size)}</div>
        </div>
        <DownloadButton m={m} />
      </div>
    );
  }
  if (error) {
    return (
      <div className="flex items-center gap-2 rounded-lg bg-black/5 p-3 text-xs text-slate-500" data-testid="message-media-error">
        <ImageOff className="h-4 w-4" />
        {t("inbox.mediaError")}
      </div>
    );
  }
  if (!url) return <div className="h-40 w-56 animate-pulse rounded-lg bg-black/10" data-testid="message-media-loading" />;
  if (m.type === "audio") {
    return (
      <div className="flex flex-col gap-1">
        <audio controls src={url} className="max-w-full" data-testid="message-audio" />
        <DownloadButton m={m} />
      </div>
    );
  }
  if (m.type === "video") {
    return (
      <div className="flex flex-col gap-1">
        <video controls src={url} className="max-h-72 max-w-full rounded-lg" data-testid="message-video" />
        <DownloadButton m={m} />
      </div>
    );
  }
  return (
    <div className="group relative">
      <a href={url} target="_blank" rel="noreferrer">
        <img
          src={url}
          alt={m.media?.file_name ?? t("inbox.type.image")}
          data-testid="message-image"
          className={cx("max-h-72 max-w-full rounded-lg object-contain", m.type === "sticker" && "h-32 w-32 bg-transparent")}
        />
      </a>
      <div className="absolute right-1.5 bottom-1.5 opacity-0 transition-opacity group-hover:opacity-100">
        <DownloadButton m={m} invert />
      </div>
    </div>
  );
}

const TYPE_LABEL: Partial<Record<Message["type"], TKey>> = {
  location: "inbox.type.location",
  contact: "inbox.type.contact",
  reaction: "inbox.type.reaction",
  unknown: "inbox.type.unknown",
};

/** A private note: for the team only, so it looks nothing like a WhatsApp bubble. */
function NoteBubble({ m, onRetry, focused }: { m: UiMessage; onRetry?: () => void; focused?: boolean }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const author = useUsers((s) => s.items.find((u) => u.id === m.author_id));
  return (
    <div className="flex justify-end">
      <div
        data-testid="message-bubble"
        data-direction="note"
        data-status={displayStatusOf(m)}
        data-message-id={isTemp(m) ? "" : m.id}
        data-client-id={m.client_id ?? ""}
        data-focused={focused ? "true" : undefined}
        className={cx(
          "relative max-w-[85%] rounded-xl border border-dashed border-amber-400 bg-amber-50 px-2.5 pt-1.5 pb-1 text-sm shadow-sm sm:max-w-[70%]",
          focused && "ring-2 ring-sky-400",
        )}
      >
        <div className="mb-0.5 flex items-center gap-1 text-[11px] font-semibold text-amber-800" data-testid="note-label">
          <Lock className="h-3 w-3" />
          {author ? t("inbox.noteBy", { name: author.name }) : t("inbox.note")}
        </div>
        <p className="whitespace-pre-wrap break-words text-slate-900" data-testid="message-text">
          {m.body}
        </p>
        <div className="mt-0.5 flex items-center justify-end gap-1 text-[11px] text-amber-700/80">
          <span>{clockTime(m.sent_at, lang)}</span>
          {(isTemp(m) || m.local?.error) && <StatusTicks status={displayStatusOf(m)} />}
        </div>
        {m.local?.error && onRetry && (
          <button
            type="button"
            onClick={onRetry}
            data-testid="message-retry"
            className="mt-1 inline-flex items-center gap-1 text-xs font-medium text-red-600 hover:underline"
          >
            <RotateCcw className="h-3 w-3" />
            {t("inbox.resend")}
          </button>
        )}
      </div>
    </div>
  );
}

interface BubbleProps {
  m: UiMessage;
  onRetry?: () => void;
  focused?: boolean;
  /** show the quoted message (scroll to it) */
  onJump?: (messageId: string) => void;
}

export function MessageBubble({ m, onRetry, focused, onJump }: BubbleProps) {
  if (m.direction === "note") return <NoteBubble m={m} onRetry={onRetry} focused={focused} />;
  return <ChatBubble m={m} onRetry={onRetry} focused={focused} onJump={onJump} />;
}

/** The quoted message above a reply; a click shows it in the thread. */
function Quote({ m, onJump }: { m: UiMessage; onJump?: (id: string) => void }) {
  const t = useT();
  // the quoted message as the thread has it now (edited or deleted since)
  const live = useChats((s) =>
    m.quoted?.message_id ? s.threads[m.chat_id]?.items.find((x) => x.id === m.quoted?.message_id) : undefined,
  );
  const chatName = useChats((s) => s.byId[m.chat_id]?.name);
  const q = m.quoted;
  if (!q) return null;
  const deleted = live ? !!live.deleted : q.deleted;
  const body = live ? live.body : q.body;
  const who = q.from_me
    ? t("inbox.you")
    : live?.sender_name || chatName || q.sender_jid?.split("@")[0] || "";
  const text = deleted
    ? t("inbox.deleted")
    : body || (q.type !== "text" ? t(`inbox.type.${q.type}` as TKey) : t("inbox.quotedMissing"));
  const target = q.message_id;
  return (
    <button
      type="button"
      data-testid="message-quote"
      data-quoted-id={target ?? ""}
      disabled={!target}
      onClick={() => target && onJump?.(target)}
      className="mb-1 block w-full rounded-md border-l-4 border-brand-500 bg-black/5 px-2 py-1 text-left text-xs hover:bg-black/10 disabled:cursor-default"
    >
      <div className="font-semibold text-brand-700">{who}</div>
      <div className={cx("line-clamp-2 text-slate-600", deleted && "italic")}>{text}</div>
    </button>
  );
}

function Reactions({ m }: { m: UiMessage }) {
  const t = useT();
  const items = m.reactions ?? [];
  if (!items.length) return null;
  const counts = new Map<string, { n: number; mine: boolean }>();
  for (const r of items) {
    const c = counts.get(r.emoji) ?? { n: 0, mine: false };
    counts.set(r.emoji, { n: c.n + 1, mine: c.mine || r.from_me });
  }
  return (
    <div className={cx("-mt-1 flex gap-1", m.direction === "out" ? "justify-end pr-2" : "justify-start pl-2")} data-testid="message-reactions">
      {[...counts.entries()].map(([emoji, c]) => (
        <button
          key={emoji}
          type="button"
          data-testid="message-reaction"
          data-emoji={emoji}
          data-mine={c.mine ? "true" : "false"}
          title={c.mine ? t("inbox.removeReaction") : undefined}
          disabled={!c.mine}
          onClick={() => void act(t, () => useChats.getState().react(m, ""))}
          className={cx(
            "rounded-full bg-white px-1.5 py-0.5 text-xs shadow ring-1",
            c.mine ? "ring-brand-300 hover:bg-brand-50" : "ring-slate-200 cursor-default",
          )}
        >
          {emoji}
          {c.n > 1 && <span className="ml-0.5 text-slate-500">{c.n}</span>}
        </button>
      ))}
    </div>
  );
}

async function act(t: ReturnType<typeof useT>, fn: () => Promise<void>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (e) {
    useToasts.getState().push("error", t("inbox.actionFailed", { error: errorText(t, e) }));
    return false;
  }
}

/** Reply, react, and for our own recent messages edit and delete for everyone. */
function Actions({ m, onEdit }: { m: UiMessage; onEdit: () => void }) {
  const t = useT();
  const [picker, setPicker] = useState(false);
  if (isTemp(m) || !m.wa_message_id || m.deleted) return null;
  const out = m.direction === "out";
  const editable = out && m.type === "text" && Date.now() - Date.parse(m.sent_at) < EDIT_WINDOW_MS;
  const btn = "rounded p-1 text-slate-500 hover:bg-slate-200 hover:text-slate-800";
  return (
    <div
      className={cx(
        "relative flex items-center gap-0.5 self-center opacity-0 transition-opacity group-hover:opacity-100 focus-within:opacity-100",
        picker && "opacity-100",
      )}
      data-testid="message-actions"
      aria-label={t("inbox.messageActions")}
    >
      <button type="button" className={btn} title={t("inbox.reply")} aria-label={t("inbox.reply")} data-testid="message-action-reply"
        onClick={() => useChats.getState().setReplyTo(m.chat_id, m)}>
        <Reply className="h-4 w-4" />
      </button>
      <button type="button" className={btn} title={t("inbox.react")} aria-label={t("inbox.react")} data-testid="message-action-react"
        onClick={() => setPicker((p) => !p)}>
        <SmilePlus className="h-4 w-4" />
      </button>
      {editable && (
        <button type="button" className={btn} title={t("inbox.editMessage")} aria-label={t("inbox.editMessage")} data-testid="message-action-edit" onClick={onEdit}>
          <Pencil className="h-4 w-4" />
        </button>
      )}
      {out && (
        <button type="button" className={btn} title={t("inbox.deleteForEveryone")} aria-label={t("inbox.deleteForEveryone")} data-testid="message-action-delete"
          onClick={() => {
            if (window.confirm(t("inbox.deleteConfirm"))) void act(t, () => useChats.getState().revokeMessage(m));
          }}>
          <Trash2 className="h-4 w-4" />
        </button>
      )}
      {picker && (
        <div className={cx("absolute bottom-8 z-10 flex gap-1 rounded-full bg-white px-2 py-1 shadow-lg ring-1 ring-slate-200", out ? "right-0" : "left-0")} data-testid="reaction-picker">
          {QUICK_REACTIONS.map((e) => (
            <button key={e} type="button" data-testid="reaction-option" data-emoji={e} className="rounded-full px-1 text-lg hover:bg-slate-100"
              onClick={() => {
                setPicker(false);
                void act(t, () => useChats.getState().react(m, e));
              }}>
              {e}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}

function EditBox({ m, onDone }: { m: UiMessage; onDone: () => void }) {
  const t = useT();
  const [text, setText] = useState(m.body ?? "");
  const [busy, setBusy] = useState(false);
  const save = async () => {
    const body = text.trim();
    if (!body || body === m.body) return onDone();
    setBusy(true);
    const ok = await act(t, () => useChats.getState().editMessage(m, body));
    setBusy(false);
    if (ok) onDone();
  };
  return (
    <div className="flex flex-col gap-1">
      <textarea
        value={text}
        autoFocus
        rows={2}
        data-testid="message-edit-input"
        onChange={(e) => setText(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey) {
            e.preventDefault();
            void save();
          } else if (e.key === "Escape") onDone();
        }}
        className="w-64 max-w-full rounded-md border border-slate-300 p-1.5 text-sm"
      />
      <div className="flex justify-end gap-2 text-xs">
        <button type="button" onClick={onDone} className="rounded px-2 py-1 text-slate-600 hover:bg-black/5">{t("common.cancel")}</button>
        <button type="button" disabled={busy} onClick={() => void save()} data-testid="message-edit-save" className="rounded bg-brand-600 px-2 py-1 font-medium text-white hover:bg-brand-700 disabled:opacity-60">
          {t("common.save")}
        </button>
      </div>
    </div>
  );
}

function ChatBubble({ m, onRetry, focused, onJump }: BubbleProps) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const [editing, setEditing] = useState(false);
  const out = m.direction === "out";
  const status = displayStatusOf(m);
  const deleted = !!m.deleted;
  const hasMedia = !deleted && (!!m.media || ["image", "video", "audio", "document", "sticker"].includes(m.type));
  const label = TYPE_LABEL[m.type];
  return (
    <div className={cx("group flex flex-col", out ? "items-end" : "items-start")}>
    <div className={cx("flex max-w-full items-start gap-1", out ? "flex-row-reverse" : "flex-row")}>
      <div
        data-testid="message-bubble"
        data-direction={m.direction}
        data-status={status}
        data-message-id={isTemp(m) ? "" : m.id}
        data-client-id={m.client_id ?? ""}
        data-focused={focused ? "true" : undefined}
        className={cx(
          "relative max-w-[85%] rounded-xl px-2.5 pt-1.5 pb-1 text-sm shadow-sm sm:max-w-[70%]",
          out ? "rounded-tr-sm bg-bubble-out" : "rounded-tl-sm bg-white",
          status === "failed" && "ring-1 ring-red-300",
          focused && "ring-2 ring-sky-400",
        )}
        data-deleted={deleted ? "true" : undefined}
      >
        {!out && m.sender_name && m.sender_jid?.endsWith("@g.us") && (
          <div className="mb-0.5 text-xs font-semibold text-brand-700">{m.sender_name}</div>
        )}
        {!deleted && <Quote m={m} onJump={onJump} />}
        {hasMedia && (
          <div className="mb-1">
            <MediaView m={m} />
          </div>
        )}
        {deleted ? (
          <p className="flex items-center gap-1 italic text-slate-500" data-testid="message-deleted">
            <Ban className="h-3.5 w-3.5" />
            {t("inbox.deleted")}
          </p>
        ) : editing ? (
          <EditBox m={m} onDone={() => setEditing(false)} />
        ) : m.body ? (
          <p className="whitespace-pre-wrap break-words text-slate-900" data-testid="message-text">
            {m.body}
          </p>
        ) : label ? (
          <p className="italic text-slate-500">{t(label)}</p>
        ) : null}
        <div className="mt-0.5 flex items-center justify-end gap-1 text-[11px] text-slate-500">
          {m.edited_at && !deleted && (
            <span className="italic" data-testid="message-edited">
              {t("inbox.edited")}
            </span>
          )}
          <span>{clockTime(m.sent_at, lang)}</span>
          {out && <StatusTicks status={status} />}
        </div>
        {m.local?.error && onRetry && (
          <button
            type="button"
            onClick={onRetry}
            data-testid="message-retry"
            className="mt-1 inline-flex items-center gap-1 text-xs font-medium text-red-600 hover:underline"
          >
            <RotateCcw className="h-3 w-3" />
            {t("inbox.resend")}
          </button>
        )}
      </div>
      <Actions m={m} onEdit={() => setEditing(true)} />
    </div>
    {!deleted && <Reactions m={m} />}
    </div>
  );
}
