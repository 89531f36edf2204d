import { X } from "lucide-react";
import { useState, type FormEvent, type KeyboardEvent } from "react";
import { ApiError, fieldErrors } from "../api/client";
import type { Lead, LeadInput } from "../api/types";
import { stageLabel, useT } from "../i18n";
import { errorText } from "../lib/util";
import { useLeads } from "../stores/leads";
import { useUsers } from "../stores/users";
import { Banner, Button, Field, Input, selectClass } from "./ui";

interface FormState {
  name: string;
  phone: string;
  email: string;
  company: string;
  stage: string;
  tags: string[];
  notes: string;
  value: string;
  assigned_to: string;
}

function toForm(lead: Lead | null, defaultStage: string): FormState {
  return {
    name: lead?.name ?? "",
    phone: lead?.phone ?? "",
    email: lead?.email ?? "",
    company: lead?.company ?? "",
    stage: lead?.stage ?? defaultStage,
    tags: lead?.tags ?? [],
    notes: lead?.notes ?? "",
    value: lead?.value === null || lead?.value === undefined ? "" : String(lead.value),
    assigned_to: lead?.assigned_to ?? "",
  };
}

export function toInput(f: FormState): LeadInput {
  const opt = (s: string) => (s.trim() ? s.trim() : null);
  return {
    name: f.name.trim(),
    phone: opt(f.phone.replace(/[\s()-]/g, "")),
    email: opt(f.email),
    company: opt(f.company),
    stage: f.stage,
    tags: f.tags,
    notes: opt(f.notes),
    value: f.value.trim() ? Number(f.value.replace(",", ".")) : null,
    assigned_to: opt(f.assigned_to),
  };
}

/** Create (lead = null) or edit a lead; API validation messages show next to their fields. */
export function LeadForm({ lead, onDone, onCancel }: { lead: Lead | null; onDone: (l: Lead) => void; onCancel?: () => void }) {
  const t = useT();
  const stages = useLeads((s) => s.stages);
  const users = useUsers((s) => s.items);
  const [f, setF] = useState<FormState>(() => toForm(lead, stages[0]?.key ?? "new"));
  const [tagDraft, setTagDraft] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [local, setLocal] = useState<Record<string, string>>({});

  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setF((p) => ({ ...p, [k]: v }));

  const addTag = (raw: string) => {
    const tag = raw.trim().replace(/,$/, "");
    if (tag && !f.tags.includes(tag)) set("tags", [...f.tags, tag]);
    setTagDraft("");
  };

  const onTagKey = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === "Enter" || e.key === ",") {
      e.preventDefault();
      addTag(tagDraft);
    } else if (e.key === "Backspace" && !tagDraft && f.tags.length) {
      set("tags", f.tags.slice(0, -1));
    }
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const pending = tagDraft.trim() ? [...f.tags, tagDraft.trim()] : f.tags;
    const form = { ...f, tags: pending };
    const errs: Record<string, string> = {};
    if (!form.name.trim()) errs.name = t("leads.form.required");
    if (form.value.trim() && Number.isNaN(Number(form.value.replace(",", ".")))) errs.value = t("leads.form.invalidNumber");
    setLocal(errs);
    if (Object.keys(errs).length) return;
    setBusy(true);
    setError(null);
    try {
      const body = toInput(form);
      const saved = lead ? await useLeads.getState().update(lead.id, body) : await useLeads.getState().create(body);
      setTagDraft("");
      onDone(saved);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const api = fieldErrors(error);
  if (error instanceof ApiError && error.status === 409 && !api.phone) api.phone = t("leads.form.phoneTaken");
  const fe = (k: string) => local[k] ?? api[k];
  const general = error !== null && Object.keys(api).filter((k) => k !== "_").length === 0 ? (api._ ?? errorText(t, error)) : null;

  return (
    <form onSubmit={submit} className="space-y-4" noValidate data-testid="lead-form">
      {general && <Banner testid="lead-form-error">{general}</Banner>}
      <Field label={t("leads.form.name")} error={fe("name")} testid="lead-name">
        <Input value={f.name} onChange={(e) => set("name", e.target.value)} data-testid="lead-name" invalid={!!fe("name")} autoFocus />
      </Field>
      <div className="grid gap-4 sm:grid-cols-2">
        <Field label={t("leads.form.phone")} error={fe("phone")} testid="lead-phone">
          <Input inputMode="tel" value={f.phone} onChange={(e) => set("phone", e.target.value)} data-testid="lead-phone" invalid={!!fe("phone")} />
        </Field>
        <Field label={t("leads.form.email")} error={fe("email")} testid="lead-email">
          <Input type="email" value={f.email} onChange={(e) => set("email", e.target.value)} data-testid="lead-email" invalid={!!fe("email")} />
        </Field>
        <Field label={t("leads.form.company")} error={fe("company")} testid="lead-company">
          <Input value={f.company} onChange={(e) => set("company", e.target.value)} data-testid="lead-company" invalid={!!fe("company")} />
        </Field>
        <Field label={t("leads.form.value")} error={fe("value")} testid="lead-value">
          <Input inputMode="decimal" value={f.value} onChange={(e) => set("value", e.target.value)} data-testid="lead-value" invalid={!!fe("value")} />
        </Field>
        <Field label={t("leads.form.stage")} error={fe("stage")} testid="lead-stage">
          <select className={selectClass} value={f.stage} onChange={(e) => set("stage", e.target.value)} data-testid="lead-stage">
            {stages.map((s) => (
              <option key={s.key} value={s.key}>
                {stageLabel(t, s.key, s.name)}
              </option>
            ))}
          </select>
        </Field>
        <Field label={t("leads.form.assignedTo")} error={fe("assigned_to")} testid="lead-assigned">
          <select className={selectClass} value={f.assigned_to} onChange={(e) => set("assigned_to", e.target.value)} data-testid="lead-assigned">
            <option value="">{t("leads.form.unassigned")}</option>
            {users.map((u) => (
              <option key={u.id} value={u.id}>
                {u.name}
              </option>
            ))}
          </select>
        </Field>
      </div>
      <Field label={t("leads.form.tags")} error={fe("tags")} testid="lead-tags">
        <div className="flex flex-wrap items-center gap-1.5 rounded-lg border border-slate-300 bg-white px-2 py-1.5 focus-within:border-brand-500 focus-within:ring-2 focus-within:ring-brand-500/40">
          {f.tags.map((tag) => (
            <span key={tag} className="inline-flex items-center gap-1 rounded-full bg-brand-50 px-2 py-0.5 text-xs font-medium text-brand-800" data-testid="lead-tag">
              {tag}
              <button type="button" onClick={() => set("tags", f.tags.filter((x) => x !== tag))} aria-label={`${t("common.delete")} ${tag}`}>
                <X className="h-3 w-3" />
              </button>
            </span>
          ))}
          <input
            value={tagDraft}
            onChange={(e) => setTagDraft(e.target.value)}
            onKeyDown={onTagKey}
            onBlur={() => tagDraft.trim() && addTag(tagDraft)}
            placeholder={t("leads.form.tagsPlaceholder")}
            data-testid="lead-tag-input"
            className="min-w-[8rem] flex-1 border-0 bg-transparent py-0.5 text-sm focus:outline-none"
          />
        </div>
      </Field>
      <Field label={t("leads.form.notes")} error={fe("notes")} testid="lead-notes">
        <textarea
          value={f.notes}
          onChange={(e) => set("notes", e.target.value)}
          rows={4}
          data-testid="lead-notes"
          className="w-full rounded-lg border border-slate-300 bg-white px-3 py-2 text-sm focus:border-brand-500 focus:outline-none focus:ring-2 focus:ring-brand-500/40"
        />
      </Field>
      <div className="flex justify-end gap-2">
        {onCancel && <Button onClick={onCancel}>{t("common.cancel")}</Button>}
        <Button type="submit" variant="primary" busy={busy} data-testid="lead-submit">
          {lead ? t("common.save") : t("common.create")}
        </Button>
      </div>
    </form>
  );
}
