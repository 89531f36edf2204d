import { ArrowLeft, MessageSquare, Trash2, UserRound } from "lucide-react";
import { useEffect, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { LeadForm } from "../components/LeadForm";
import { Avatar, Button, ConfirmDialog, EmptyState, Spinner } from "../components/ui";
import { useLang, useT } from "../i18n";
import { dateTime, errorText } from "../lib/util";
import { useLeads } from "../stores/leads";
import { useToasts } from "../stores/toasts";
import { useUsers } from "../stores/users";

export function LeadDetailPage() {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const navigate = useNavigate();
  const { leadId = "" } = useParams();
  const lead = useLeads((s) => s.byId[leadId]);
  const [state, setState] = useState<"loading" | "ready" | "missing">(lead ? "ready" : "loading");
  const [confirm, setConfirm] = useState(false);

  useEffect(() => {
    let alive = true;
    void useLeads.getState().fetchLead(leadId).then((l) => alive && setState(l ? "ready" : "missing"));
    const u = useUsers.getState();
    if (!u.loaded && !u.loading) void u.load();
    return () => {
      alive = false;
    };
  }, [leadId]);

  const back = (
    <Link to="/leads" className="mb-4 inline-flex items-center gap-1 text-sm text-slate-600 hover:text-slate-900" data-testid="lead-back">
      <ArrowLeft className="h-4 w-4" />
      {t("leads.title")}
    </Link>
  );

  if (!lead) {
    return (
      <div className="flex-1 overflow-y-auto p-4 md:p-6">
        {back}
        {state === "loading" ? (
          <Spinner />
        ) : (
          <EmptyState title={state === "missing" ? t("leads.deleted") : t("common.notFound")} icon={<UserRound className="h-6 w-6" />} />
        )}
      </div>
    );
  }

  return (
    <div className="flex-1 overflow-y-auto p-4 md:p-6" data-testid="lead-detail" data-lead-id={lead.id} data-stage={lead.stage}>
      {back}
      <div className="mx-auto max-w-3xl">
        <div className="mb-5 flex flex-wrap items-center justify-between gap-3">
          <div className="flex items-center gap-3">
            <Avatar name={lead.name} seed={lead.id} />
            <div>
              <h1 className="text-xl font-semibold text-slate-900" data-testid="lead-detail-name">{lead.name}</h1>
              <p className="text-xs text-slate-500">
                {t(lead.source === "whatsapp" ? "leads.source.whatsapp" : "leads.source.manual")} ·{" "}
                {t("leads.detail.created", { when: dateTime(lead.created_at, lang) })}
              </p>
            </div>
          </div>
          <div className="flex gap-2">
            {lead.chat_id && (
              <Button onClick={() => navigate(`/inbox/${lead.chat_id}`)} data-testid="lead-open-chat">
                <MessageSquare className="h-4 w-4" />
                {t("leads.detail.openChat")}
              </Button>
            )}
            <Button variant="danger" onClick={() => setConfirm(true)} data-testid="lead-delete">
              <Trash2 className="h-4 w-4" />
              {t("common.delete")}
            </Button>
          </div>
        </div>
        <div className="rounded-2xl border border-slate-200 bg-white p-5">
          <LeadForm key={lead.id} lead={lead} onDone={() => useToasts.getState().push("success", t("leads.saved"))} />
        </div>
      </div>
      {confirm && (
        <ConfirmDialog
          title={t("common.delete")}
          text={t("common.confirmDelete", { name: lead.name })}
          confirmLabel={t("common.delete")}
          onClose={() => setConfirm(false)}
          onConfirm={async () => {
            try {
              await useLeads.getState().remove(lead.id);
              navigate("/leads");
            } catch (e) {
              useToasts.getState().push("error", errorText(t, e));
            }
          }}
        />
      )}
    </div>
  );
}
