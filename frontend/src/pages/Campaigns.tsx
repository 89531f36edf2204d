import { Eye, Megaphone, Pause, Play, Plus, ShieldCheck, X } from "lucide-react";
import { useCallback, useEffect, useState, type FormEvent } from "react";
import { fieldErrors } from "../api/client";
import { campaignsApi } from "../api/endpoints";
import type { AudiencePreview, Campaign, CampaignAction, CampaignRecipient, CampaignStatus, RecipientStatus } from "../api/types";
import { Banner, Button, ConfirmDialog, EmptyState, ErrorState, Field, Input, Modal, PageHeader, Spinner, selectClass } from "../components/ui";
import { useT, type TKey } from "../i18n";
import { cx, errorText } from "../lib/util";
import { useAuth } from "../stores/auth";
import { useCampaigns } from "../stores/campaigns";
import { useDevices } from "../stores/devices";
import { useLeads } from "../stores/leads";
import { useToasts } from "../stores/toasts";

const statusStyles: Record<CampaignStatus, string> = {
  draft: "bg-slate-100 text-slate-700",
  running: "bg-sky-50 text-sky-800",
  paused: "bg-amber-50 text-amber-800",
  done: "bg-brand-50 text-brand-800",
  cancelled: "bg-red-50 text-red-700",
};

const RECIPIENT_STATUSES: RecipientStatus[] = ["waiting", "queued", "sent", "delivered", "read", "failed", "skipped", "cancelled"];

function CampaignForm({ onCreated }: { onCreated: () => void }) {
  const t = useT();
  const devices = useDevices((s) => s.items);
  const loadDevices = useDevices((s) => s.load);
  const stages = useLeads((s) => s.stages);
  const loadStages = useLeads((s) => s.loadStages);
  const create = useCampaigns((s) => s.create);
  const [name, setName] = useState("");
  const [deviceId, setDeviceId] = useState("");
  const [body, setBody] = useState("Hola {{name}}, ");
  const [mode, setMode] = useState<"tag" | "stage">("tag");
  const [tag, setTag] = useState("");
  const [stage, setStage] = useState("");
  const [perMinute, setPerMinute] = useState(12);
  const [preview, setPreview] = useState<AudiencePreview | null>(null);
  const [busy, setBusy] = useState(false);
  const [previewing, setPreviewing] = useState(false);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    void loadDevices();
    void loadStages();
  }, [loadDevices, loadStages]);
  useEffect(() => {
    // a connected number first: a campaign on an unlinked one would only fail
    const first = devices.find((d) => d.status === "connected") ?? devices[0];
    if (!deviceId && first) setDeviceId(first.id);
  }, [devices, deviceId]);
  useEffect(() => setPreview(null), [mode, tag, stage]);

  const audience = mode === "tag" ? { tag: tag.trim() } : { stage: stage || stages[0]?.key };

  const look = async () => {
    setPreviewing(true);
    setError(null);
    try {
      setPreview(await campaignsApi.preview(audience));
    } catch (err) {
      setError(err);
    } finally {
      setPreviewing(false);
    }
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await create({ name: name.trim(), device_id: deviceId, body, audience, per_minute: perMinute });
      useToasts.getState().push("success", t("campaigns.created"));
      onCreated();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const fields = fieldErrors(error);
  const general = error !== null && Object.keys(fields).filter((k) => k !== "_").length === 0;

  return (
    <form onSubmit={submit} className="space-y-4" data-testid="campaign-form" noValidate>
      {general && <Banner testid="campaign-form-error">{fields._ ?? errorText(t, error)}</Banner>}
      <Field label={t("campaigns.name")} error={fields.name} testid="campaign-name">
        <Input value={name} onChange={(e) => setName(e.target.value)} data-testid="campaign-name" invalid={!!fields.name} autoFocus />
      </Field>
      <Field label={t("campaigns.device")} error={fields.device_id} testid="campaign-device">
        {devices.length === 0 ? (
          <p className="text-sm text-slate-500">{t("campaigns.noDevices")}</p>
        ) : (
          <select className={selectClass} value={deviceId} onChange={(e) => setDeviceId(e.target.value)} data-testid="campaign-device">
            {devices.map((d) => (
              <option key={d.id} value={d.id}>
                {d.name}
                {d.phone ? ` (+${d.phone})` : ""}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label={t("campaigns.body")} error={fields.body} hint={t("campaigns.bodyHint")} testid="campaign-body">
        <textarea
          className={cx(selectClass, "min-h-[5rem]")}
          value={body}
          onChange={(e) => setBody(e.target.value)}
          data-testid="campaign-body"
        />
      </Field>
      <fieldset>
        <legend className="mb-1 block text-sm font-medium text-slate-700">{t("campaigns.audience")}</legend>
        <div className="mb-2 flex gap-4 text-sm">
          <label className="flex items-center gap-1.5">
            <input type="radio" checked={mode === "tag"} onChange={() => setMode("tag")} data-testid="campaign-by-tag" className="accent-brand-600" />
            {t("campaigns.byTag")}
          </label>
          <label className="flex items-center gap-1.5">
            <input type="radio" checked={mode === "stage"} onChange={() => setMode("stage")} data-testid="campaign-by-stage" className="accent-brand-600" />
            {t("campaigns.byStage")}
          </label>
        </div>
        {mode === "tag" ? (
          <Input value={tag} placeholder={t("campaigns.tag")} onChange={(e) => setTag(e.target.value)} data-testid="campaign-tag" />
        ) : (
          <select className={selectClass} value={stage || stages[0]?.key} onChange={(e) => setStage(e.target.value)} data-testid="campaign-stage">
            {stages.map((s) => (
              <option key={s.key} value={s.key}>
                {s.name}
              </option>
            ))}
          </select>
        )}
        {fields.audience && <span className="mt-1 block text-xs text-red-600">{fields.audience}</span>}
        <div className="mt-2 flex items-center gap-3">
          <Button size="sm" onClick={() => void look()} busy={previewing} data-testid="campaign-preview">
            <Eye className="h-3.5 w-3.5" />
            {t("campaigns.preview")}
          </Button>
          {preview && (
            <span className="text-sm font-medium text-slate-800" data-testid="campaign-preview-count" data-total={preview.total} data-skipped={preview.skipped}>
              {t("campaigns.previewCount", { total: preview.total, skipped: preview.skipped })}
            </span>
          )}
        </div>
        {preview && preview.sample.length > 0 && (
          <ul className="mt-2 max-h-40 divide-y divide-slate-100 overflow-y-auto rounded-lg border border-slate-200 text-sm" data-testid="campaign-preview-list">
            {preview.sample.map((r) => (
              <li key={r.lead_id} className="flex justify-between gap-2 px-3 py-1.5" data-testid="campaign-preview-lead" data-skipped={r.skipped ?? ""}>
                <span className={cx("truncate", r.skipped && "text-slate-400 line-through")}>{r.name}</span>
                <span className="shrink-0 text-xs text-slate-500">
                  {r.skipped ? t(`campaigns.skipped.${r.skipped}` as TKey) : r.phone ? `+${r.phone}` : ""}
                </span>
              </li>
            ))}
          </ul>
        )}
      </fieldset>
      <Field label={t("campaigns.perMinute")} error={fields.per_minute} hint={t("campaigns.perMinuteHint")} testid="campaign-per-minute">
        <Input
          type="number"
          min={1}
          max={60}
          value={perMinute}
          onChange={(e) => setPerMinute(Number(e.target.value))}
          data-testid="campaign-per-minute"
          invalid={!!fields.per_minute}
        />
      </Field>
      <Button type="submit" variant="primary" busy={busy} className="w-full" disabled={!deviceId} data-testid="campaign-submit">
        {t("campaigns.create")}
      </Button>
    </form>
  );
}

function ProgressBar({ c }: { c: Campaign }) {
  const total = Math.max(c.total, 1);
  const pct = (n: number) => `${Math.min(100, (n / total) * 100)}%`;
  // stacked: read within delivered within sent; failed at the end
  return (
    <div className="relative h-2.5 w-full overflow-hidden rounded-full bg-slate-100" data-testid="campaign-progress" role="progressbar" aria-valuemin={0} aria-valuemax={c.total} aria-valuenow={c.sent + c.failed}>
      <div className="absolute inset-y-0 left-0 bg-brand-200" style={{ width: pct(c.sent) }} />
      <div className="absolute inset-y-0 left-0 bg-brand-400" style={{ width: pct(c.delivered) }} />
      <div className="absolute inset-y-0 left-0 bg-brand-600" style={{ width: pct(c.read) }} />
      <div className="absolute inset-y-0 bg-red-400" style={{ left: pct(c.sent), width: pct(c.failed) }} />
    </div>
  );
}

function RecipientsPanel({ campaign }: { campaign: Campaign }) {
  const t = useT();
  const [status, setStatus] = useState<string>("");
  const [items, setItems] = useState<CampaignRecipient[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = useCallback(async () => {
    try {
      const page = await campaignsApi.recipients(campaign.id, { limit: 200, ...(status ? { status } : {}) });
      setItems(page.items);
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, [campaign.id, status]);
  // the counters moved: so did some recipient
  const moved = `${campaign.sent}/${campaign.delivered}/${campaign.read}/${campaign.failed}/${campaign.queued}/${campaign.status}`;
  useEffect(() => {
    void load();
  }, [load, moved]);

  if (items === null && error) return <ErrorState error={error} onRetry={() => void load()} />;
  return (
    <div className="border-t border-slate-100" data-testid="campaign-recipients">
      <div className="flex items-center justify-between gap-2 px-4 py-2">
        <span className="text-sm font-medium text-slate-700">{t("campaigns.recipients")}</span>
        <div className="w-48 shrink-0">
        <select className={cx(selectClass, "py-1 text-xs")} value={status} onChange={(e) => setStatus(e.target.value)} data-testid="recipients-status">
          <option value="">{t("campaigns.recipients.all")}</option>
          {RECIPIENT_STATUSES.map((s) => (
            <option key={s} value={s}>
              {t(`campaigns.rstatus.${s}` as TKey)}
            </option>
          ))}
        </select>
        </div>
      </div>
      {items === null ? (
        <Spinner />
      ) : items.length === 0 ? (
        <p className="px-4 pb-4 text-sm text-slate-500">{t("campaigns.recipients.empty")}</p>
      ) : (
        <div className="max-h-80 overflow-auto">
          <table className="w-full text-left text-sm">
            <thead className="sticky top-0 bg-slate-50 text-xs uppercase tracking-wide text-slate-500">
              <tr>
                <th className="px-4 py-2 font-medium">{t("campaigns.recipients.name")}</th>
                <th className="px-4 py-2 font-medium">{t("campaigns.recipients.phone")}</th>
                <th className="px-4 py-2 font-medium">{t("campaigns.recipients.status")}</th>
                <th className="px-4 py-2 font-medium">{t("campaigns.recipients.detail")}</th>
              </tr>
            </thead>
            <tbody className="divide-y divide-slate-100">
              {items.map((r) => (
                <tr key={r.lead_id} data-testid="recipient-row" data-status={r.status}>
                  <td className="px-4 py-1.5 text-slate-800">{r.name}</td>
                  <td className="px-4 py-1.5 font-mono text-xs text-slate-600">{r.phone ? `+${r.phone}` : t("common.none")}</td>
                  <td className="px-4 py-1.5 text-slate-700" data-testid="recipient-status">
                    {t(`campaigns.rstatus.${r.status}` as TKey)}
                  </td>
                  <td className="px-4 py-1.5 text-xs text-slate-500">
                    {r.error === "opt-out" || r.error === "no_phone" ? t(`campaigns.skipped.${r.error}` as TKey) : (r.error ?? "")}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function CampaignCard({ campaign }: { campaign: Campaign }) {
  const t = useT();
  const act = useCampaigns((s) => s.act);
  const devices = useDevices((s) => s.items);
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState<CampaignAction | null>(null);
  const [confirming, setConfirming] = useState(false);
  const device = devices.find((d) => d.id === campaign.device_id);

  const run = async (action: CampaignAction) => {
    setBusy(action);
    try {
      await act(campaign.id, action);
    } catch (err) {
      useToasts.getState().push("error", errorText(t, err));
    } finally {
      setBusy(null);
    }
  };

  const c = campaign;
  return (
    <li className="rounded-2xl border border-slate-200 bg-white" data-testid="campaign-row" data-campaign-id={c.id} data-status={c.status}>
      <div className="space-y-2 px-4 py-3">
        <div className="flex flex-wrap items-center gap-2">
          <span className="min-w-0 flex-1 truncate font-medium text-slate-900" data-testid="campaign-row-name">
            {c.name}
          </span>
          <span className={cx("rounded-full px-2 py-0.5 text-xs font-medium", statusStyles[c.status])} data-testid="campaign-status">
            {t(`campaigns.status.${c.status}` as TKey)}
          </span>
          {c.status === "draft" && (
            <Button size="sm" variant="primary" busy={busy === "start"} onClick={() => void run("start")} data-testid="campaign-start">
              <Play className="h-3.5 w-3.5" />
              {t("campaigns.start")}
            </Button>
          )}
          {c.status === "running" && (
            <Button size="sm" busy={busy === "pause"} onClick={() => void run("pause")} data-testid="campaign-pause">
              <Pause className="h-3.5 w-3.5" />
              {t("campaigns.pause")}
            </Button>
          )}
          {c.status === "paused" && (
            <Button size="sm" variant="primary" busy={busy === "resume"} onClick={() => void run("resume")} data-testid="campaign-resume">
              <Play className="h-3.5 w-3.5" />
              {t("campaigns.resume")}
            </Button>
          )}
          {(c.status === "draft" || c.status === "running" || c.status === "paused") && (
            <Button size="sm" variant="danger" onClick={() => setConfirming(true)} data-testid="campaign-cancel" aria-label={t("campaigns.cancel")}>
              <X className="h-3.5 w-3.5" />
            </Button>
          )}
          <Button size="sm" onClick={() => setOpen((o) => !o)} data-testid="campaign-recipients-toggle" aria-expanded={open}>
            {open ? t("campaigns.recipients.hide") : t("campaigns.recipients")}
          </Button>
        </div>
        <p className="truncate text-sm text-slate-500" title={c.body}>
          {device ? `${device.name} · ` : ""}
          {t("campaigns.pace", { n: c.per_minute })} · {c.body}
        </p>
        <ProgressBar c={c} />
        <div className="flex flex-wrap justify-between gap-2 text-xs text-slate-600">
          <span data-testid="campaign-counters" data-sent={c.sent} data-delivered={c.delivered} data-read={c.read} data-failed={c.failed} data-total={c.total}>
            {t("campaigns.counters", { sent: c.sent, delivered: c.delivered, read: c.read, failed: c.failed, total: c.total })}
          </span>
          <span>{t("campaigns.skippedCount", { skipped: c.skipped })}</span>
        </div>
      </div>
      {open && <RecipientsPanel campaign={c} />}
      {confirming && (
        <ConfirmDialog
          title={t("campaigns.cancel")}
          text={t("campaigns.cancelConfirm", { name: c.name })}
          confirmLabel={t("campaigns.cancel")}
          onClose={() => setConfirming(false)}
          onConfirm={() => run("cancel")}
        />
      )}
    </li>
  );
}

export function CampaignsPage() {
  const t = useT();
  const me = useAuth((s) => s.user);
  const account = useAuth((s) => s.account);
  const { items, loading, loaded, error, load } = useCampaigns();
  const loadDevices = useDevices((s) => s.load);
  const [creating, setCreating] = useState(false);
  const isAdmin = me?.role === "admin";

  useEffect(() => {
    if (isAdmin) {
      void load();
      void loadDevices();
    }
  }, [load, loadDevices, isAdmin]);

  if (!isAdmin) {
    return (
      <div className="flex-1 p-6">
        <EmptyState title={t("campaigns.adminOnly")} icon={<ShieldCheck className="h-6 w-6" />} testid="campaigns-forbidden" />
      </div>
    );
  }

  return (
    <div className="flex-1 overflow-y-auto p-4 md:p-6" data-testid="campaigns-page">
      <PageHeader
        title={t("campaigns.title")}
        subtitle={account ? `${account.name} · ${t("campaigns.subtitle")}` : t("campaigns.subtitle")}
        actions={
          <Button variant="primary" onClick={() => setCreating(true)} data-testid="campaign-add">
            <Plus className="h-4 w-4" />
            {t("campaigns.add")}
          </Button>
        }
      />
      {loading && !loaded ? (
        <Spinner />
      ) : error && !loaded ? (
        <ErrorState error={error} onRetry={() => void load()} />
      ) : items.length === 0 ? (
        <div className="rounded-2xl border border-slate-200 bg-white">
          <EmptyState title={t("campaigns.empty")} hint={t("campaigns.emptyHint")} icon={<Megaphone className="h-6 w-6" />} testid="campaigns-empty" />
        </div>
      ) : (
        <ul className="space-y-3" data-testid="campaign-list">
          {items.map((c) => (
            <CampaignCard key={c.id} campaign={c} />
          ))}
        </ul>
      )}
      {creating && (
        <Modal title={t("campaigns.add")} onClose={() => setCreating(false)} testid="campaign-create-dialog" wide>
          <CampaignForm onCreated={() => setCreating(false)} />
        </Modal>
      )}
    </div>
  );
}
