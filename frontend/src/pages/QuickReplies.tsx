import { Pencil, Trash2, Zap } from "lucide-react";
import { useEffect, useState, type FormEvent } from "react";
import { ApiError, fieldErrors } from "../api/client";
import type { QuickReply } from "../api/types";
import { Banner, Button, ConfirmDialog, EmptyState, ErrorState, Field, Input, PageHeader, Spinner } from "../components/ui";
import { useT } from "../i18n";
import { errorText } from "../lib/util";
import { useQuickReplies } from "../stores/quickReplies";
import { useToasts } from "../stores/toasts";

function ReplyForm({ editing, onDone }: { editing: QuickReply | null; onDone: () => void }) {
  const t = useT();
  const [f, setF] = useState({ shortcut: editing?.shortcut ?? "", body: editing?.body ?? "" });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    setF({ shortcut: editing?.shortcut ?? "", body: editing?.body ?? "" });
    setError(null);
  }, [editing]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = { shortcut: f.shortcut.trim().replace(/^\//, ""), body: f.body };
      if (editing) await useQuickReplies.getState().update(editing.id, body);
      else await useQuickReplies.getState().create(body);
      setF({ shortcut: "", body: "" });
      useToasts.getState().push("success", t("quick.saved"));
      onDone();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const fields = fieldErrors(error);
  if (error instanceof ApiError && error.code === "shortcut_taken") fields.shortcut = t("quick.taken");
  const general = error !== null && Object.keys(fields).filter((k) => k !== "_").length === 0;

  return (
    <form onSubmit={submit} className="space-y-4 rounded-2xl border border-slate-200 bg-white p-5" data-testid="quick-form" noValidate>
      <h2 className="flex items-center gap-2 font-semibold text-slate-900">
        <Zap className="h-5 w-5 text-brand-600" />
        {editing ? `/${editing.shortcut}` : t("quick.add")}
      </h2>
      {general && <Banner testid="quick-form-error">{fields._ ?? errorText(t, error)}</Banner>}
      <Field label={t("quick.shortcut")} error={fields.shortcut} hint={t("quick.shortcutHint")} testid="quick-shortcut">
        <div className="flex items-center gap-1">
          <span className="text-slate-400">/</span>
          <Input
            value={f.shortcut}
            onChange={(e) => setF({ ...f, shortcut: e.target.value })}
            data-testid="quick-shortcut"
            invalid={!!fields.shortcut}
            placeholder="saludo"
          />
        </div>
      </Field>
      <Field label={t("quick.body")} error={fields.body} testid="quick-body">
        <textarea
          value={f.body}
          onChange={(e) => setF({ ...f, body: e.target.value })}
          data-testid="quick-body"
          rows={4}
          placeholder="¡Hola {{name}}! ¿En qué te podemos ayudar?"
          className="w-full rounded-lg border border-slate-300 bg-white px-3 py-2 text-sm focus:border-brand-500 focus:outline-none focus:ring-2 focus:ring-brand-500/40"
        />
      </Field>
      <div className="flex gap-2">
        {editing && (
          <Button onClick={onDone} className="flex-1" data-testid="quick-cancel">
            {t("common.cancel")}
          </Button>
        )}
        <Button type="submit" variant="primary" busy={busy} className="flex-1" data-testid="quick-submit">
          {editing ? t("common.save") : t("quick.add")}
        </Button>
      </div>
    </form>
  );
}

export function QuickRepliesPage() {
  const t = useT();
  const { items, loading, loaded, error, load } = useQuickReplies();
  const [editing, setEditing] = useState<QuickReply | null>(null);
  const [deleting, setDeleting] = useState<QuickReply | null>(null);

  useEffect(() => {
    void load();
  }, [load]);

  return (
    <div className="flex-1 overflow-y-auto p-4 md:p-6" data-testid="quick-page">
      <PageHeader title={t("quick.title")} subtitle={t("quick.subtitle")} />
      <div className="grid gap-6 lg:grid-cols-[1fr_24rem]">
        <div className="rounded-2xl border border-slate-200 bg-white">
          {loading && !loaded ? (
            <Spinner />
          ) : error && !loaded ? (
            <ErrorState error={error} onRetry={() => void load()} />
          ) : items.length === 0 ? (
            <EmptyState title={t("quick.empty")} hint={t("quick.emptyHint")} icon={<Zap className="h-6 w-6" />} />
          ) : (
            <ul className="divide-y divide-slate-100" data-testid="quick-list">
              {items.map((r) => (
                <li key={r.id} className="flex items-start gap-3 px-4 py-3" data-testid="quick-row" data-shortcut={r.shortcut}>
                  <code className="shrink-0 rounded bg-brand-50 px-1.5 py-0.5 text-sm font-semibold text-brand-800">/{r.shortcut}</code>
                  <p className="min-w-0 flex-1 text-sm whitespace-pre-wrap text-slate-700">{r.body}</p>
                  <button
                    type="button"
                    onClick={() => setEditing(r)}
                    className="rounded p-1.5 text-slate-500 hover:bg-slate-100"
                    aria-label={t("common.edit")}
                    data-testid="quick-edit"
                  >
                    <Pencil className="h-4 w-4" />
                  </button>
                  <button
                    type="button"
                    onClick={() => setDeleting(r)}
                    className="rounded p-1.5 text-red-500 hover:bg-red-50"
                    aria-label={t("common.delete")}
                    data-testid="quick-delete"
                  >
                    <Trash2 className="h-4 w-4" />
                  </button>
                </li>
              ))}
            </ul>
          )}
        </div>
        <ReplyForm editing={editing} onDone={() => setEditing(null)} />
      </div>
      {deleting && (
        <ConfirmDialog
          title={t("common.delete")}
          text={t("quick.deleteConfirm", { name: deleting.shortcut })}
          confirmLabel={t("common.delete")}
          onConfirm={async () => {
            try {
              await useQuickReplies.getState().remove(deleting.id);
            } catch (e) {
              useToasts.getState().push("error", errorText(t, e));
            }
          }}
          onClose={() => setDeleting(null)}
        />
      )}
    </div>
  );
}
