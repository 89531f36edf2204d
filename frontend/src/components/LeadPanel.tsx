import { Building2, ExternalLink, Mail, Phone, UserRound } from "lucide-react";
import { useEffect, useMemo } from "react";
import { Link } from "react-router";
import type { Chat, Lead } from "../api/types";
import { stageLabel, useLang, useT } from "../i18n";
import { errorText, formatMoney } from "../lib/util";
import { useLeads } from "../stores/leads";
import { useToasts } from "../stores/toasts";
import { Avatar, EmptyState, Tag, selectClass } from "./ui";

export function LeadPanel({ chat }: { chat: Chat }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const byId = useLeads((s) => s.byId);
  const stages = useLeads((s) => s.stages);
  const lead: Lead | undefined = useMemo(
    () => (chat.lead_id ? byId[chat.lead_id] : Object.values(byId).find((l) => l.chat_id === chat.id)),
    [byId, chat.lead_id, chat.id],
  );

  useEffect(() => {
    if (chat.lead_id && !useLeads.getState().byId[chat.lead_id]) void useLeads.getState().fetchLead(chat.lead_id);
  }, [chat.lead_id]);

  if (!lead) {
    return (
      <div data-testid="chat-lead-panel" data-lead-id="">
        <div className="border-b border-slate-100 px-4 py-3 text-xs font-semibold tracking-wide text-slate-500 uppercase">{t("inbox.leadPanel")}</div>
        <EmptyState title={t("inbox.noLead")} icon={<UserRound className="h-6 w-6" />} testid="chat-lead-empty" />
      </div>
    );
  }

  const move = async (stage: string) => {
    try {
      await useLeads.getState().move(lead.id, stage);
    } catch (e) {
      useToasts.getState().push("error", `${t("leads.moveFailed")}: ${errorText(t, e)}`);
    }
  };

  return (
    <div data-testid="chat-lead-panel" data-lead-id={lead.id}>
      <div className="border-b border-slate-100 px-4 py-3 text-xs font-semibold tracking-wide text-slate-500 uppercase">{t("inbox.leadPanel")}</div>
      <div className="space-y-4 p-4">
        <div className="flex items-center gap-3">
          <Avatar name={lead.name} seed={lead.id} />
          <div className="min-w-0">
            <div className="truncate font-semibold text-slate-900" data-testid="chat-lead-name">{lead.name}</div>
            {lead.value !== null && lead.value !== "" && <div className="text-xs text-slate-500">{formatMoney(lead.value, lang)}</div>}
          </div>
        </div>
        <label className="block">
          <span className="mb-1 block text-xs font-medium text-slate-500">{t("leads.form.stage")}</span>
          <select className={selectClass} value={lead.stage} onChange={(e) => void move(e.target.value)} data-testid="chat-lead-stage">
            {stages.map((s) => (
              <option key={s.key} value={s.key}>
                {stageLabel(t, s.key, s.name)}
              </option>
            ))}
          </select>
        </label>
        <dl className="space-y-2 text-sm">
          {lead.phone && (
            <div className="flex items-center gap-2 text-slate-700">
              <Phone className="h-4 w-4 text-slate-400" />+{lead.phone.replace(/^\+/, "")}
            </div>
          )}
          {lead.email && (
            <div className="flex items-center gap-2 break-all text-slate-700">
              <Mail className="h-4 w-4 shrink-0 text-slate-400" />
              {lead.email}
            </div>
          )}
          {lead.company && (
            <div className="flex items-center gap-2 text-slate-700">
              <Building2 className="h-4 w-4 text-slate-400" />
              {lead.company}
            </div>
          )}
        </dl>
        {lead.tags.length > 0 && (
          <div className="flex flex-wrap gap-1">
            {lead.tags.map((tag) => (
              <Tag key={tag}>{tag}</Tag>
            ))}
          </div>
        )}
        {lead.notes && <p className="line-clamp-6 text-sm whitespace-pre-wrap text-slate-600">{lead.notes}</p>}
        <Link
          to={`/leads/${lead.id}`}
          className="inline-flex items-center gap-1.5 text-sm font-medium text-brand-700 hover:underline"
          data-testid="chat-lead-link"
        >
          <ExternalLink className="h-4 w-4" />
          {t("inbox.openLead")}
        </Link>
      </div>
    </div>
  );
}
