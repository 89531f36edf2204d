import { CheckCircle2, Clock3, RotateCcw, Tag as TagIcon, X } from "lucide-react";
import { useEffect, useState, type KeyboardEvent } from "react";
import type { Chat, ChatStatus } from "../api/types";
import { useT, type TKey } from "../i18n";
import { cx, errorText } from "../lib/util";
import { useAuth } from "../stores/auth";
import { useChats, type ChatPatch } from "../stores/chats";
import { useToasts } from "../stores/toasts";
import { useUsers } from "../stores/users";

const STATE_LABEL: Record<ChatStatus, TKey> = {
  open: "inbox.state.open",
  pending: "inbox.state.pending",
  resolved: "inbox.state.resolved",
};

const STATE_STYLE: Record<ChatStatus, string> = {
  open: "bg-emerald-50 text-emerald-700 ring-emerald-200",
  pending: "bg-amber-50 text-amber-800 ring-amber-200",
  resolved: "bg-slate-100 text-slate-600 ring-slate-200",
};

function useUpdate(chatId: string) {
  const t = useT();
  return async (patch: ChatPatch) => {
    try {
      await useChats.getState().updateChat(chatId, patch);
    } catch (e) {
      useToasts.getState().push("error", `${t("inbox.updateFailed")}: ${errorText(t, e)}`);
    }
  };
}

export function StatusBadge({ status }: { status: ChatStatus }) {
  const t = useT();
  return (
    <span
      className={cx("inline-flex items-center rounded-full px-2 py-0.5 text-[11px] font-medium ring-1", STATE_STYLE[status])}
      data-testid="chat-status"
      data-status={status}
    >
      {t(STATE_LABEL[status])}
    </span>
  );
}

/** Resolve / reopen, and "pending" for a conversation waiting on someone. */
export function StatusActions({ chat }: { chat: Chat }) {
  const t = useT();
  const update = useUpdate(chat.id);
  const status = chat.status ?? "open";
  return (
    <div className="flex items-center gap-1">
      {status !== "pending" && status !== "resolved" && (
        <button
          type="button"
          onClick={() => void update({ status: "pending" })}
          className="hidden items-center gap-1 rounded-lg px-2 py-1.5 text-xs font-medium text-slate-600 hover:bg-slate-100 lg:inline-flex"
          data-testid="chat-pending"
          title={t("inbox.markPending")}
        >
          <Clock3 className="h-4 w-4" />
          {t("inbox.markPending")}
        </button>
      )}
      {status === "resolved" ? (
        <button
          type="button"
          onClick={() => void update({ status: "open" })}
          className="inline-flex items-center gap-1 rounded-lg border border-slate-300 px-2.5 py-1.5 text-xs font-medium text-slate-700 hover:bg-slate-50"
          data-testid="chat-reopen"
        >
          <RotateCcw className="h-4 w-4" />
          {t("inbox.reopen")}
        </button>
      ) : (
        <button
          type="button"
          onClick={() => void update({ status: "resolved" })}
          className="inline-flex items-center gap-1 rounded-lg bg-brand-600 px-2.5 py-1.5 text-xs font-medium text-white hover:bg-brand-700"
          data-testid="chat-resolve"
        >
          <CheckCircle2 className="h-4 w-4" />
          {t("inbox.resolve")}
        </button>
      )}
    </div>
  );
}

export function AssigneePicker({ chat }: { chat: Chat }) {
  const t = useT();
  const me = useAuth((s) => s.user);
  const users = useUsers((s) => s.items);
  const loaded = useUsers((s) => s.loaded);
  const update = useUpdate(chat.id);

  useEffect(() => {
    if (!useUsers.getState().loaded && !useUsers.getState().loading) void useUsers.getState().load();
  }, []);

  const options = loaded ? users : me ? [me] : [];
  const known = !chat.assigned_to || options.some((u) => u.id === chat.assigned_to);
  return (
    <select
      value={chat.assigned_to ?? ""}
      onChange={(e) => void update({ assigned_to: e.target.value || null })}
      aria-label={t("inbox.assignee")}
      title={t("inbox.assignee")}
      data-testid="chat-assignee"
      className="max-w-40 rounded-lg border border-slate-200 bg-white px-2 py-1.5 text-xs text-slate-700 focus:border-brand-500 focus:outline-none"
    >
      <option value="">{t("inbox.unassigned")}</option>
      {options.map((u) => (
        <option key={u.id} value={u.id}>
          {u.id === me?.id ? t("inbox.me", { name: u.name }) : u.name}
        </option>
      ))}
      {!known && <option value={chat.assigned_to ?? ""}>{chat.assigned_to?.slice(0, 8)}</option>}
    </select>
  );
}

/** The chat's labels as chips (× removes one) and a field that adds one. */
export function LabelChips({ chat }: { chat: Chat }) {
  const t = useT();
  const update = useUpdate(chat.id);
  const known = useChats((s) => s.labels);
  const [text, setText] = useState("");
  const [adding, setAdding] = useState(false);
  const labels = chat.labels ?? [];

  const add = () => {
    const label = text.replace(/\s+/g, " ").trim().toLowerCase();
    setText("");
    if (!label || labels.includes(label)) return;
    void update({ labels: [...labels, label] });
  };
  const onKey = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === "Enter") {
      e.preventDefault();
      add();
    } else if (e.key === "Escape") {
      e.stopPropagation();
      setText("");
      setAdding(false);
    }
  };

  return (
    <div className="flex flex-wrap items-center gap-1" data-testid="chat-labels">
      {labels.map((l) => (
        <span
          key={l}
          className="inline-flex items-center gap-0.5 rounded-full bg-sky-50 py-0.5 pr-1 pl-2 text-[11px] font-medium text-sky-800 ring-1 ring-sky-200"
          data-testid="chat-label"
          data-label={l}
        >
          {l}
          <button
            type="button"
            onClick={() => void update({ labels: labels.filter((x) => x !== l) })}
            className="rounded-full p-0.5 hover:bg-sky-100"
            aria-label={t("inbox.removeLabel", { label: l })}
            data-testid="chat-label-remove"
          >
            <X className="h-3 w-3" />
          </button>
        </span>
      ))}
      {adding ? (
        <>
          <input
            autoFocus
            value={text}
            onChange={(e) => setText(e.target.value)}
            onKeyDown={onKey}
            onBlur={() => {
              add();
              setAdding(false);
            }}
            maxLength={40}
            list="clarin-known-labels"
            placeholder={t("inbox.labelPlaceholder")}
            data-testid="chat-label-input"
            className="w-40 rounded-full border border-slate-300 px-2 py-0.5 text-[11px] focus:border-brand-500 focus:outline-none"
          />
          <datalist id="clarin-known-labels">
            {known.filter((l) => !labels.includes(l)).map((l) => (
              <option key={l} value={l} />
            ))}
          </datalist>
        </>
      ) : (
        <button
          type="button"
          onClick={() => setAdding(true)}
          className="inline-flex items-center gap-1 rounded-full px-2 py-0.5 text-[11px] font-medium text-slate-500 ring-1 ring-slate-200 hover:bg-slate-50"
          data-testid="chat-label-add"
        >
          <TagIcon className="h-3 w-3" />
          {t("inbox.addLabel")}
        </button>
      )}
    </div>
  );
}
