import { AlertCircle, Check, CheckCheck, Clock, Download, FileText, FileWarning, ImageOff, Loader2, Lock, RotateCcw } from "lucide-react";
import { useEffect, useState } from "react";
import { messagesApi } from "../api/endpoints";
import type { Message, MessageStatus } from "../api/types";
import { useLang, useT, type TKey } from "../i18n";
import { downloadMedia, mediaUrl } from "../lib/media";
import { displayStatusOf, isTemp, type UiMessage } from "../lib/reconcile";
import { useChats } from "../stores/chats";
import { clockTime, cx, errorText, formatBytes } from "../lib/util";
import { useUsers } from "../stores/users";


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

export function MessageBubble({ m, onRetry, focused }: { m: UiMessage; onRetry?: () => void; focused?: boolean }) {
  if (m.direction === "note") return <NoteBubble m={m} onRetry={onRetry} focused={focused} />;
  return <ChatBubble m={m} onRetry={onRetry} focused={focused} />;
}

function ChatBubble({ m, onRetry, focused }: { m: UiMessage; onRetry?: () => void; focused?: boolean }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const out = m.direction === "out";
  const status = displayStatusOf(m);
  const hasMedia = !!m.media || ["image", "video", "audio", "document", "sticker"].includes(m.type);
  const label = TYPE_LABEL[m.type];
  return (
    <div className={cx("flex", out ? "justify-end" : "justify-start")}>
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
      >
        {!out && m.sender_name && m.sender_jid?.endsWith("@g.us") && (
          <div className="mb-0.5 text-xs font-semibold text-brand-700">{m.sender_name}</div>
        )}
        {hasMedia && (
          <div className="mb-1">
            <MediaView m={m} />
          </div>
        )}
        {m.body ? (
          <p className="whitespace-pre-wrap break-words text-slate-900" data-testid="message-text">
            {m.body}
          </p>
        ) : label ? (
          <p className="italic text-slate-500">{t(label)}</p>
        ) : null}
        <div className="mt-0.5 flex items-center justify-end gap-1 text-[11px] text-slate-500">
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
    </div>
  );
}
