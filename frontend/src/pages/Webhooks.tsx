import { Check, Copy, Plus, RefreshCw, RotateCcw, ShieldCheck, Trash2, Webhook as WebhookIcon } from "lucide-react";
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { fieldErrors } from "../api/client";
import { webhooksApi } from "../api/endpoints";
import type { DeliveryStatus, Webhook, WebhookCreated, WebhookDelivery } from "../api/types";
import { Banner, Button, ConfirmDialog, EmptyState, ErrorState, Field, Input, Modal, PageHeader, Spinner, Tag } from "../components/ui";
import { locale, useLang, useT, type TKey } from "../i18n";
import { cx, errorText } from "../lib/util";
import { useAuth } from "../stores/auth";
import { useToasts } from "../stores/toasts";
import { useWebhooks } from "../stores/webhooks";

const ALL = "*";

function when(iso: string | null, lang: "es" | "en"): string {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime())
    ? ""
    : d.toLocaleString(locale(lang), { day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function WebhookForm({ onCreated }: { onCreated: (created: WebhookCreated) => void }) {
  const t = useT();
  const eventTypes = useWebhooks((s) => s.eventTypes);
  const create = useWebhooks((s) => s.create);
  const [url, setUrl] = useState("");
  const [all, setAll] = useState(true);
  const [picked, setPicked] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const toggle = (type: string) => setPicked((p) => (p.includes(type) ? p.filter((x) => x !== type) : [...p, type]));

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const created = await create({ url: url.trim(), events: all ? [ALL] : picked });
      useToasts.getState().push("success", t("webhooks.created"));
      onCreated(created);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const fields = fieldErrors(error);
  const general = error !== null && Object.keys(fields).filter((k) => k !== "_").length === 0;

  return (
    <form onSubmit={submit} className="space-y-4" data-testid="webhook-form" noValidate>
      {general && <Banner testid="webhook-form-error">{fields._ ?? errorText(t, error)}</Banner>}
      <Field label={t("webhooks.url")} error={fields.url} hint={t("webhooks.urlHint")} testid="webhook-url">
        <Input
          type="url"
          value={url}
          placeholder="https://example.com/clarin/webhook"
          onChange={(e) => setUrl(e.target.value)}
          data-testid="webhook-url"
          invalid={!!fields.url}
          autoFocus
        />
      </Field>
      <fieldset>
        <legend className="mb-1 block text-sm font-medium text-slate-700">{t("webhooks.events")}</legend>
        <label className="mb-2 flex items-center gap-2 text-sm font-medium text-slate-800">
          <input type="checkbox" checked={all} onChange={(e) => setAll(e.target.checked)} data-testid="webhook-event-all" className="h-4 w-4 accent-brand-600" />
          {t("webhooks.allEvents")} <code className="text-xs text-slate-400">*</code>
        </label>
        <div className="grid grid-cols-1 gap-1 sm:grid-cols-2" data-testid="webhook-event-picker">
          {eventTypes.map((type) => (
            <label key={type} className={cx("flex items-center gap-2 rounded px-1 py-0.5 text-sm", all ? "text-slate-400" : "text-slate-700")}>
              <input
                type="checkbox"
                disabled={all}
                checked={all || picked.includes(type)}
                onChange={() => toggle(type)}
                data-testid="webhook-event"
                data-event={type}
                className="h-4 w-4 accent-brand-600"
              />
              <code className="text-xs">{type}</code>
            </label>
          ))}
        </div>
        {fields.events && (
          <span className="mt-1 block text-xs text-red-600" data-testid="webhook-events-error">
            {fields.events}
          </span>
        )}
      </fieldset>
      <Button type="submit" variant="primary" busy={busy} className="w-full" data-testid="webhook-submit">
        {t("webhooks.create")}
      </Button>
    </form>
  );
}

function SecretDialog({ created, onClose }: { created: WebhookCreated; onClose: () => void }) {
  const t = useT();
  const [copied, setCopied] = useState(false);
  const codeRef = useRef<HTMLElement>(null);

  const copy = async () => {
    try {
      await navigator.clipboard.writeText(created.secret);
      setCopied(true);
    } catch {
      // no clipboard (plain http, permissions): select it for Ctrl-C instead
      const el = codeRef.current;
      const selection = window.getSelection();
      if (el && selection) {
        const range = document.createRange();
        range.selectNodeContents(el);
        selection.removeAllRanges();
        selection.addRange(range);
      }
    }
  };

  return (
    <Modal title={t("webhooks.secret.title")} onClose={onClose} testid="webhook-secret-dialog">
      <Banner kind="warning">{t("webhooks.secret.once")}</Banner>
      <div className="mt-4 flex items-center gap-2">
        <code ref={codeRef} className="min-w-0 flex-1 break-all rounded-lg bg-slate-100 px-3 py-2 font-mono text-sm text-slate-900" data-testid="webhook-secret">
          {created.secret}
        </code>
        <Button onClick={() => void copy()} data-testid="webhook-secret-copy" data-copied={copied || undefined}>
          {copied ? <Check className="h-4 w-4 text-brand-600" /> : <Copy className="h-4 w-4" />}
          {copied ? t("webhooks.secret.copied") : t("webhooks.secret.copy")}
        </Button>
      </div>
      <p className="mt-3 truncate text-xs text-slate-500">{created.url}</p>
      <div className="mt-5 flex justify-end">
        <Button variant="primary" onClick={onClose} data-testid="webhook-secret-done">
          {t("webhooks.secret.done")}
        </Button>
      </div>
    </Modal>
  );
}

const statusStyles: Record<DeliveryStatus, string> = {
  delivered: "bg-brand-50 text-brand-800",
  pending: "bg-amber-50 text-amber-800",
  sending: "bg-sky-50 text-sky-800",
  failed: "bg-red-50 text-red-700",
};

function DeliveriesPanel({ webhook }: { webhook: Webhook }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const [items, setItems] = useState<WebhookDelivery[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busyId, setBusyId] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      const page = await webhooksApi.deliveries(webhook.id, { limit: 25 });
      setItems(page.items);
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, [webhook.id]);

  useEffect(() => {
    void load();
    // a log that moves by itself while open (retries, redeliveries)
    const timer = window.setInterval(() => void load(), 3000);
    return () => window.clearInterval(timer);
  }, [load]);

  const redeliver = async (d: WebhookDelivery) => {
    setBusyId(d.id);
    try {
      const updated = await webhooksApi.redeliver(webhook.id, d.id);
      setItems((list) => (list ?? []).map((x) => (x.id === d.id ? updated : x)));
      useToasts.getState().push("info", t("webhooks.deliveries.redelivered"));
    } catch (err) {
      useToasts.getState().push("error", errorText(t, err));
    } finally {
      setBusyId(null);
    }
  };

  if (items === null && error) return <ErrorState error={error} onRetry={() => void load()} />;
  if (items === null) return <Spinner />;
  return (
    <div className="border-t border-slate-100" data-testid="webhook-deliveries">
      <div className="flex items-center justify-between px-4 py-2">
        <span className="text-sm font-medium text-slate-700">{t("webhooks.deliveries")}</span>
        <Button size="sm" variant="ghost" onClick={() => void load()} data-testid="deliveries-refresh">
          <RefreshCw className="h-3.5 w-3.5" />
          {t("webhooks.deliveries.refresh")}
        </Button>
      </div>
      {items.length === 0 ? (
        <p className="px-4 pb-4 text-sm text-slate-500" data-testid="deliveries-empty">
          {t("webhooks.deliveries.empty")}
        </p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full text-left text-sm">
            <thead className="bg-slate-50 text-xs uppercase tracking-wide text-slate-500">
              <tr>
                <th className="px-4 py-2 font-medium">{t("webhooks.deliveries.when")}</th>
                <th className="px-4 py-2 font-medium">{t("webhooks.deliveries.event")}</th>
                <th className="px-4 py-2 font-medium">{t("webhooks.deliveries.status")}</th>
                <th className="px-4 py-2 font-medium">{t("webhooks.deliveries.code")}</th>
                <th className="px-4 py-2 font-medium">{t("webhooks.deliveries.attempts")}</th>
                <th className="px-4 py-2 font-medium">{t("webhooks.deliveries.detail")}</th>
                <th className="px-4 py-2" />
              </tr>
            </thead>
            <tbody className="divide-y divide-slate-100">
              {items.map((d) => (
                <tr key={d.id} data-testid="delivery-row" data-status={d.status} data-delivery-id={d.id}>
                  <td className="whitespace-nowrap px-4 py-2 text-slate-600">{when(d.created_at, lang)}</td>
                  <td className="px-4 py-2">
                    <code className="text-xs">{d.event_type}</code>
                  </td>
                  <td className="px-4 py-2">
                    <span className={cx("rounded-full px-2 py-0.5 text-xs font-medium", statusStyles[d.status])} data-testid="delivery-status">
                      {t(`webhooks.status.${d.status}` as TKey)}
                    </span>
                  </td>
                  <td className="px-4 py-2 font-mono text-xs text-slate-700" data-testid="delivery-code">
                    {d.status_code ?? t("common.none")}
                  </td>
                  <td className="px-4 py-2 text-slate-700" data-testid="delivery-attempts">
                    {d.attempt}
                  </td>
                  <td className="max-w-[16rem] px-4 py-2 text-xs text-slate-500">
                    <div className="truncate" title={d.error ?? undefined}>
                      {d.error ?? ""}
                    </div>
                    {d.status === "pending" && d.next_attempt_at && (
                      <div className="truncate">{t("webhooks.deliveries.nextAttempt", { when: when(d.next_attempt_at, lang) })}</div>
                    )}
                  </td>
                  <td className="px-4 py-2 text-right">
                    <Button
                      size="sm"
                      disabled={d.status === "sending"}
                      busy={busyId === d.id}
                      onClick={() => void redeliver(d)}
                      data-testid="delivery-redeliver"
                    >
                      <RotateCcw className="h-3.5 w-3.5" />
                      {t("webhooks.deliveries.redeliver")}
                    </Button>
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

function WebhookCard({ webhook }: { webhook: Webhook }) {
  const t = useT();
  const setActive = useWebhooks((s) => s.setActive);
  const remove = useWebhooks((s) => s.remove);
  const [open, setOpen] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [toggling, setToggling] = useState(false);

  const flip = async () => {
    setToggling(true);
    try {
      await setActive(webhook.id, !webhook.active);
    } catch (err) {
      useToasts.getState().push("error", errorText(t, err));
    } finally {
      setToggling(false);
    }
  };

  return (
    <li className="rounded-2xl border border-slate-200 bg-white" data-testid="webhook-row" data-webhook-id={webhook.id} data-active={webhook.active}>
      <div className="flex flex-wrap items-center gap-3 px-4 py-3">
        <div className="min-w-0 flex-1">
          <div className="truncate font-mono text-sm text-slate-900" data-testid="webhook-row-url" title={webhook.url}>
            {webhook.url}
          </div>
          <div className="mt-1 flex flex-wrap gap-1">
            {webhook.events.map((e) => (
              <Tag key={e}>{e === ALL ? t("webhooks.allEvents") : e}</Tag>
            ))}
          </div>
        </div>
        <button
          type="button"
          role="switch"
          aria-checked={webhook.active}
          disabled={toggling}
          onClick={() => void flip()}
          data-testid="webhook-active"
          className="inline-flex items-center gap-2 text-sm text-slate-600"
        >
          <span className={cx("relative inline-flex h-5 w-9 shrink-0 rounded-full transition-colors", webhook.active ? "bg-brand-600" : "bg-slate-300")}>
            <span className={cx("absolute top-0.5 h-4 w-4 rounded-full bg-white shadow transition-transform", webhook.active ? "translate-x-4" : "translate-x-0.5")} />
          </span>
          {webhook.active ? t("webhooks.active") : t("webhooks.paused")}
        </button>
        <Button size="sm" onClick={() => setOpen((o) => !o)} data-testid="webhook-deliveries-toggle" aria-expanded={open}>
          {open ? t("webhooks.deliveries.hide") : t("webhooks.deliveries")}
        </Button>
        <Button size="sm" variant="danger" onClick={() => setConfirming(true)} data-testid="webhook-delete" aria-label={t("common.delete")}>
          <Trash2 className="h-3.5 w-3.5" />
        </Button>
      </div>
      {open && <DeliveriesPanel webhook={webhook} />}
      {confirming && (
        <ConfirmDialog
          title={t("common.delete")}
          text={t("webhooks.deleteConfirm", { url: webhook.url })}
          confirmLabel={t("common.delete")}
          onClose={() => setConfirming(false)}
          onConfirm={async () => {
            try {
              await remove(webhook.id);
              useToasts.getState().push("success", t("webhooks.deleted"));
            } catch (err) {
              useToasts.getState().push("error", errorText(t, err));
            }
          }}
        />
      )}
    </li>
  );
}

export function WebhooksPage() {
  const t = useT();
  const me = useAuth((s) => s.user);
  const account = useAuth((s) => s.account);
  const { items, loading, loaded, error, load } = useWebhooks();
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<WebhookCreated | null>(null);
  const isAdmin = me?.role === "admin";

  useEffect(() => {
    if (isAdmin) void load();
  }, [load, isAdmin]);

  if (!isAdmin) {
    return (
      <div className="flex-1 p-6">
        <EmptyState title={t("webhooks.adminOnly")} icon={<ShieldCheck className="h-6 w-6" />} testid="webhooks-forbidden" />
      </div>
    );
  }

  return (
    <div className="flex-1 overflow-y-auto p-4 md:p-6" data-testid="webhooks-page">
      <PageHeader
        title={t("webhooks.title")}
        subtitle={t("webhooks.subtitle", { account: account?.name ?? "" })}
        actions={
          <Button variant="primary" onClick={() => setCreating(true)} data-testid="webhook-add">
            <Plus className="h-4 w-4" />
            {t("webhooks.add")}
          </Button>
        }
      />
      {loading && !loaded ? (
        <Spinner />
      ) : error && !loaded ? (
        <ErrorState error={error} onRetry={() => void load()} />
      ) : items.length === 0 ? (
        <div className="rounded-2xl border border-slate-200 bg-white">
          <EmptyState title={t("webhooks.empty")} hint={t("webhooks.emptyHint")} icon={<WebhookIcon className="h-6 w-6" />} testid="webhooks-empty" />
        </div>
      ) : (
        <ul className="space-y-3" data-testid="webhook-list">
          {items.map((w) => (
            <WebhookCard key={w.id} webhook={w} />
          ))}
        </ul>
      )}
      {creating && (
        <Modal title={t("webhooks.add")} onClose={() => setCreating(false)} testid="webhook-create-dialog" wide>
          <WebhookForm
            onCreated={(c) => {
              setCreating(false);
              setCreated(c);
            }}
          />
        </Modal>
      )}
      {created && <SecretDialog created={created} onClose={() => setCreated(null)} />}
    </div>
  );
}
