import { LayoutList, Plus, Search, SquareKanban, Tag as TagIcon, UserRound } from "lucide-react";
import { useEffect, useMemo, useState, type DragEvent, type UIEvent } from "react";
import { useNavigate, useSearchParams } from "react-router";
import type { Lead } from "../api/types";
import { LeadForm } from "../components/LeadForm";
import { Button, EmptyState, ErrorState, Modal, PageHeader, Spinner, Tag, selectClass } from "../components/ui";
import { stageLabel, useLang, useT } from "../i18n";
import { cx, errorText, formatMoney, shortTime } from "../lib/util";
import { useLeads, type LeadView } from "../stores/leads";
import { useToasts } from "../stores/toasts";
import { useUsers } from "../stores/users";

function StagePill({ stage }: { stage: string }) {
  const t = useT();
  const stages = useLeads((s) => s.stages);
  const name = stages.find((s) => s.key === stage)?.name;
  const color =
    stage === "won"
      ? "bg-brand-100 text-brand-800"
      : stage === "lost"
        ? "bg-slate-200 text-slate-600"
        : stage === "new"
          ? "bg-sky-100 text-sky-800"
          : "bg-amber-100 text-amber-800";
  return <span className={cx("inline-flex rounded-full px-2 py-0.5 text-xs font-medium", color)}>{stageLabel(t, stage, name)}</span>;
}

async function moveLead(id: string, stage: string, failText: (e: unknown) => string) {
  try {
    await useLeads.getState().move(id, stage);
  } catch (e) {
    useToasts.getState().push("error", failText(e));
  }
}

function LeadTable({ leads }: { leads: Lead[] }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const navigate = useNavigate();
  return (
    <div className="overflow-x-auto rounded-xl border border-slate-200 bg-white">
      <table className="min-w-full text-left text-sm" data-testid="lead-table">
        <thead className="border-b border-slate-200 bg-slate-50 text-xs font-medium text-slate-500 uppercase">
          <tr>
            <th className="px-4 py-2.5">{t("leads.col.name")}</th>
            <th className="hidden px-4 py-2.5 sm:table-cell">{t("leads.col.phone")}</th>
            <th className="hidden px-4 py-2.5 lg:table-cell">{t("leads.col.company")}</th>
            <th className="px-4 py-2.5">{t("leads.col.stage")}</th>
            <th className="hidden px-4 py-2.5 md:table-cell">{t("leads.col.tags")}</th>
            <th className="hidden px-4 py-2.5 text-right lg:table-cell">{t("leads.col.value")}</th>
            <th className="hidden px-4 py-2.5 xl:table-cell">{t("leads.col.source")}</th>
            <th className="hidden px-4 py-2.5 md:table-cell">{t("leads.col.lastContact")}</th>
          </tr>
        </thead>
        <tbody className="divide-y divide-slate-100">
          {leads.map((l) => (
            <tr
              key={l.id}
              onClick={() => navigate(`/leads/${l.id}`)}
              className="cursor-pointer hover:bg-slate-50"
              data-testid="lead-row"
              data-lead-id={l.id}
              data-stage={l.stage}
            >
              <td className="px-4 py-2.5">
                <div className="font-medium text-slate-900" data-testid="lead-row-name">{l.name}</div>
                <div className="text-xs text-slate-500 sm:hidden">{l.phone ? `+${l.phone.replace(/^\+/, "")}` : ""}</div>
                {l.email && <div className="hidden text-xs text-slate-500 sm:block">{l.email}</div>}
              </td>
              <td className="hidden px-4 py-2.5 whitespace-nowrap text-slate-600 sm:table-cell">{l.phone ? `+${l.phone.replace(/^\+/, "")}` : t("common.none")}</td>
              <td className="hidden px-4 py-2.5 text-slate-600 lg:table-cell">{l.company || t("common.none")}</td>
              <td className="px-4 py-2.5">
                <StagePill stage={l.stage} />
              </td>
              <td className="hidden px-4 py-2.5 md:table-cell">
                <div className="flex flex-wrap gap-1">
                  {l.tags.map((tag) => (
                    <Tag key={tag}>{tag}</Tag>
                  ))}
                </div>
              </td>
              <td className="hidden px-4 py-2.5 text-right whitespace-nowrap text-slate-700 lg:table-cell">{formatMoney(l.value, lang)}</td>
              <td className="hidden px-4 py-2.5 text-slate-600 xl:table-cell">{t(l.source === "whatsapp" ? "leads.source.whatsapp" : "leads.source.manual")}</td>
              <td className="hidden px-4 py-2.5 whitespace-nowrap text-slate-500 md:table-cell">{shortTime(l.last_contact_at, lang, t)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function LeadCard({ lead }: { lead: Lead }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const navigate = useNavigate();
  const stages = useLeads((s) => s.stages);
  const [dragging, setDragging] = useState(false);
  return (
    <div
      draggable
      onDragStart={(e) => {
        e.dataTransfer.setData("text/plain", lead.id);
        e.dataTransfer.setData("application/x-clarin-lead", lead.id);
        e.dataTransfer.effectAllowed = "move";
        setDragging(true);
      }}
      onDragEnd={() => setDragging(false)}
      onClick={() => navigate(`/leads/${lead.id}`)}
      data-testid="lead-card"
      data-lead-id={lead.id}
      data-stage={lead.stage}
      className={cx(
        "cursor-grab rounded-lg border border-slate-200 bg-white p-3 shadow-sm hover:border-brand-300 active:cursor-grabbing",
        dragging && "opacity-50",
      )}
    >
      <div className="flex items-start justify-between gap-2">
        <div className="min-w-0">
          <div className="truncate text-sm font-medium text-slate-900" data-testid="lead-card-name">{lead.name}</div>
          {lead.company && <div className="truncate text-xs text-slate-500">{lead.company}</div>}
          {lead.phone && <div className="truncate text-xs text-slate-500">+{lead.phone.replace(/^\+/, "")}</div>}
        </div>
        {lead.value !== null && lead.value !== "" && <span className="shrink-0 text-xs font-medium text-slate-700">{formatMoney(lead.value, lang)}</span>}
      </div>
      {lead.tags.length > 0 && (
        <div className="mt-2 flex flex-wrap gap-1">
          {lead.tags.map((tag) => (
            <Tag key={tag}>{tag}</Tag>
          ))}
        </div>
      )}
      {/* touch screens have no HTML5 drag and drop: a select moves the card */}
      <select
        className="mt-2 w-full rounded border border-slate-200 bg-slate-50 px-1.5 py-1 text-xs md:hidden"
        value={lead.stage}
        onClick={(e) => e.stopPropagation()}
        onChange={(e) => void moveLead(lead.id, e.target.value, (err) => `${t("leads.moveFailed")}: ${errorText(t, err)}`)}
        data-testid="lead-card-stage"
        aria-label={t("leads.form.stage")}
      >
        {stages.map((s) => (
          <option key={s.key} value={s.key}>
            {stageLabel(t, s.key, s.name)}
          </option>
        ))}
      </select>
    </div>
  );
}

function Kanban({ leads }: { leads: Lead[] }) {
  const t = useT();
  const stages = useLeads((s) => s.stages);
  const [over, setOver] = useState<string | null>(null);
  const grouped = useMemo(() => {
    const g: Record<string, Lead[]> = {};
    for (const s of stages) g[s.key] = [];
    for (const l of leads) (g[l.stage] ??= []).push(l);
    return g;
  }, [leads, stages]);

  const onDrop = (stage: string) => (e: DragEvent<HTMLDivElement>) => {
    e.preventDefault();
    setOver(null);
    const id = e.dataTransfer.getData("application/x-clarin-lead") || e.dataTransfer.getData("text/plain");
    if (id) void moveLead(id, stage, (err) => `${t("leads.moveFailed")}: ${errorText(t, err)}`);
  };

  return (
    <div className="flex min-h-0 flex-1 gap-3 overflow-x-auto pb-2" data-testid="kanban">
      {stages.map((s) => {
        const items = grouped[s.key] ?? [];
        return (
          <div
            key={s.key}
            data-testid="kanban-column"
            data-stage={s.key}
            onDragOver={(e) => {
              e.preventDefault();
              e.dataTransfer.dropEffect = "move";
              if (over !== s.key) setOver(s.key);
            }}
            onDragLeave={(e) => {
              if (!e.currentTarget.contains(e.relatedTarget as Node | null)) setOver(null);
            }}
            onDrop={onDrop(s.key)}
            className={cx(
              "flex w-64 shrink-0 flex-col rounded-xl border bg-slate-100/70 sm:w-72",
              over === s.key ? "border-brand-400 bg-brand-50" : "border-transparent",
            )}
          >
            <div className="flex items-center justify-between px-3 py-2.5">
              <span className="text-sm font-semibold text-slate-700">{stageLabel(t, s.key, s.name)}</span>
              <span className="rounded-full bg-white px-2 text-xs font-medium text-slate-500" data-testid="kanban-column-count">
                {items.length}
              </span>
            </div>
            <div className="flex min-h-24 flex-1 flex-col gap-2 overflow-y-auto px-2 pb-2">
              {items.length === 0 ? (
                <div className="rounded-lg border border-dashed border-slate-300 p-4 text-center text-xs text-slate-400">
                  {over === s.key ? t("leads.dropHere") : t("leads.columnEmpty")}
                </div>
              ) : (
                items.map((l) => <LeadCard key={l.id} lead={l} />)
              )}
            </div>
          </div>
        );
      })}
    </div>
  );
}

export function LeadsPage() {
  const t = useT();
  const navigate = useNavigate();
  const [params, setParams] = useSearchParams();
  const view: LeadView = params.get("view") === "kanban" ? "kanban" : "table";
  const { items, filters, loading, loaded, error, cursor, loadingMore, stages } = useLeads();
  const [q, setQ] = useState(filters.q);
  const [tag, setTag] = useState(filters.tag);
  const [creating, setCreating] = useState(false);

  useEffect(() => {
    const st = useLeads.getState();
    if (st.view !== view) void st.setView(view);
    else if (!st.loaded) void st.load();
  }, [view]);

  useEffect(() => {
    const u = useUsers.getState();
    if (!u.loaded && !u.loading) void u.load();
  }, []);

  useEffect(() => {
    const st = useLeads.getState();
    if (q === st.filters.q && tag === st.filters.tag) return;
    const id = setTimeout(() => void st.setFilters({ q, tag }), 300);
    return () => clearTimeout(id);
  }, [q, tag]);

  const setView = (v: LeadView) => {
    const next = new URLSearchParams(params);
    if (v === "kanban") next.set("view", "kanban");
    else next.delete("view");
    setParams(next, { replace: true });
  };

  const onScroll = (e: UIEvent<HTMLDivElement>) => {
    const el = e.currentTarget;
    if (view === "table" && cursor && !loadingMore && el.scrollHeight - el.scrollTop - el.clientHeight < 200) void useLeads.getState().loadMore();
  };

  const filtered = !!(filters.q || filters.tag || (view === "table" && filters.stage));

  return (
    <div className="flex min-h-0 flex-1 flex-col overflow-y-auto p-4 md:p-6" onScroll={onScroll} data-testid="leads-page">
      <PageHeader
        title={t("leads.title")}
        actions={
          <>
            <div className="inline-flex rounded-lg border border-slate-300 bg-white p-0.5">
              <button
                type="button"
                onClick={() => setView("table")}
                data-testid="leads-view-table"
                aria-pressed={view === "table"}
                className={cx("inline-flex items-center gap-1.5 rounded-md px-3 py-1.5 text-sm", view === "table" ? "bg-brand-600 text-white" : "text-slate-600")}
              >
                <LayoutList className="h-4 w-4" />
                {t("leads.table")}
              </button>
              <button
                type="button"
                onClick={() => setView("kanban")}
                data-testid="leads-view-kanban"
                aria-pressed={view === "kanban"}
                className={cx("inline-flex items-center gap-1.5 rounded-md px-3 py-1.5 text-sm", view === "kanban" ? "bg-brand-600 text-white" : "text-slate-600")}
              >
                <SquareKanban className="h-4 w-4" />
                {t("leads.kanban")}
              </button>
            </div>
            <Button variant="primary" onClick={() => setCreating(true)} data-testid="lead-new">
              <Plus className="h-4 w-4" />
              {t("leads.new")}
            </Button>
          </>
        }
      />
      <div className="mb-4 flex flex-col gap-2 sm:flex-row">
        <div className="relative flex-1">
          <Search className="pointer-events-none absolute top-1/2 left-2.5 h-4 w-4 -translate-y-1/2 text-slate-400" />
          <input
            type="search"
            value={q}
            onChange={(e) => setQ(e.target.value)}
            placeholder={t("leads.search")}
            aria-label={t("leads.search")}
            data-testid="lead-search"
            className="w-full rounded-lg border border-slate-300 bg-white py-2 pr-3 pl-8 text-sm focus:border-brand-500 focus:outline-none focus:ring-2 focus:ring-brand-500/40"
          />
        </div>
        {view === "table" && (
          <select
            className={cx(selectClass, "sm:w-48")}
            value={filters.stage}
            onChange={(e) => void useLeads.getState().setFilters({ stage: e.target.value })}
            data-testid="lead-stage-filter"
            aria-label={t("leads.filter.stage")}
          >
            <option value="">{t("leads.filter.allStages")}</option>
            {stages.map((s) => (
              <option key={s.key} value={s.key}>
                {stageLabel(t, s.key, s.name)}
              </option>
            ))}
          </select>
        )}
        <div className="relative sm:w-48">
          <TagIcon className="pointer-events-none absolute top-1/2 left-2.5 h-4 w-4 -translate-y-1/2 text-slate-400" />
          <input
            value={tag}
            onChange={(e) => setTag(e.target.value)}
            placeholder={t("leads.filter.tagPlaceholder")}
            aria-label={t("leads.filter.tag")}
            data-testid="lead-tag-filter"
            className="w-full rounded-lg border border-slate-300 bg-white py-2 pr-3 pl-8 text-sm focus:border-brand-500 focus:outline-none focus:ring-2 focus:ring-brand-500/40"
          />
        </div>
      </div>

      {loading && !loaded ? (
        <Spinner />
      ) : error && !loaded ? (
        <ErrorState error={error} onRetry={() => void useLeads.getState().load()} />
      ) : view === "kanban" ? (
        <>
          {loading && <Spinner className="py-1" />}
          <Kanban leads={items} />
        </>
      ) : items.length === 0 ? (
        filtered ? (
          <EmptyState title={t("leads.noResults")} icon={<Search className="h-6 w-6" />} />
        ) : (
          <EmptyState
            title={t("leads.empty")}
            hint={t("leads.emptyHint")}
            icon={<UserRound className="h-6 w-6" />}
            action={
              <Button variant="primary" onClick={() => setCreating(true)}>
                <Plus className="h-4 w-4" />
                {t("leads.new")}
              </Button>
            }
          />
        )
      ) : (
        <>
          <LeadTable leads={items} />
          {cursor && (
            <div className="mt-3 flex justify-center">
              <Button size="sm" busy={loadingMore} onClick={() => void useLeads.getState().loadMore()} data-testid="lead-load-more">
                {t("common.loadMore")}
              </Button>
            </div>
          )}
        </>
      )}

      {creating && (
        <Modal title={t("leads.form.createTitle")} onClose={() => setCreating(false)} testid="lead-create-modal" wide>
          <LeadForm
            lead={null}
            onCancel={() => setCreating(false)}
            onDone={(l) => {
              setCreating(false);
              navigate(`/leads/${l.id}`);
            }}
          />
        </Modal>
      )}
    </div>
  );
}
