import type { ChatStatus } from "../api/types";
import { useT, type TKey } from "../i18n";
import type { InboxTab } from "../lib/reconcile";
import { cx } from "../lib/util";
import { useChats } from "../stores/chats";
import { selectClass } from "./ui";

const TABS: { tab: InboxTab; label: TKey; count: "mine" | "unassigned" | "all" }[] = [
  { tab: "mine", label: "inbox.tabs.mine", count: "mine" },
  { tab: "unassigned", label: "inbox.tabs.unassigned", count: "unassigned" },
  { tab: "all", label: "inbox.tabs.all", count: "all" },
];

const STATUSES: { value: ChatStatus | ""; label: TKey }[] = [
  { value: "open", label: "inbox.conv.open" },
  { value: "pending", label: "inbox.conv.pending" },
  { value: "resolved", label: "inbox.conv.resolved" },
  { value: "", label: "inbox.filter.anyStatus" },
];

/** Mine / Unassigned / All, each with how many of its chats have something unread. */
export function InboxTabs() {
  const t = useT();
  const tab = useChats((s) => s.filters.tab);
  const counts = useChats((s) => s.counts);
  return (
    <div className="flex rounded-lg bg-slate-100 p-0.5" role="tablist" data-testid="inbox-tabs">
      {TABS.map((x) => {
        const n = counts?.[x.count] ?? 0;
        const active = tab === x.tab;
        return (
          <button
            key={x.tab}
            type="button"
            role="tab"
            aria-selected={active}
            data-testid="inbox-tab"
            data-tab={x.tab}
            onClick={() => void useChats.getState().setFilters({ tab: x.tab })}
            className={cx(
              "flex flex-1 items-center justify-center gap-1.5 rounded-md px-2 py-1.5 text-xs font-medium",
              active ? "bg-white text-slate-900 shadow-sm" : "text-slate-600 hover:text-slate-900",
            )}
          >
            {t(x.label)}
            {n > 0 && (
              <span
                className="inline-flex h-4 min-w-4 items-center justify-center rounded-full bg-brand-500 px-1 text-[10px] font-semibold text-white"
                data-testid="inbox-tab-count"
                title={t("inbox.tabs.unreadCount", { n })}
              >
                {n > 99 ? "99+" : n}
              </span>
            )}
          </button>
        );
      })}
    </div>
  );
}

export function StatusFilter() {
  const t = useT();
  const status = useChats((s) => s.filters.status);
  return (
    <select
      className={cx(selectClass, "py-1.5 text-xs")}
      value={status}
      aria-label={t("inbox.filter.status")}
      onChange={(e) => void useChats.getState().setFilters({ status: e.target.value as ChatStatus | "" })}
      data-testid="chat-status-filter"
    >
      {STATUSES.map((s) => (
        <option key={s.value} value={s.value}>
          {t(s.label)}
        </option>
      ))}
    </select>
  );
}

export function LabelFilter() {
  const t = useT();
  const label = useChats((s) => s.filters.label);
  const labels = useChats((s) => s.labels);
  if (!labels.length && !label) return null;
  return (
    <select
      className={cx(selectClass, "py-1.5 text-xs")}
      value={label}
      aria-label={t("inbox.filter.label")}
      onChange={(e) => void useChats.getState().setFilters({ label: e.target.value })}
      data-testid="chat-label-filter"
    >
      <option value="">{t("inbox.filter.allLabels")}</option>
      {labels.map((l) => (
        <option key={l} value={l}>
          {l}
        </option>
      ))}
    </select>
  );
}
