import { ShieldCheck, UserPlus, Users as UsersIcon } from "lucide-react";
import { useEffect, useState, type FormEvent } from "react";
import { ApiError, fieldErrors } from "../api/client";
import type { Role } from "../api/types";
import { Avatar, Banner, Button, EmptyState, ErrorState, Field, Input, PageHeader, Spinner, selectClass } from "../components/ui";
import { useT } from "../i18n";
import { cx, errorText } from "../lib/util";
import { useAuth } from "../stores/auth";
import { useToasts } from "../stores/toasts";
import { useUsers } from "../stores/users";

function AddUserForm() {
  const t = useT();
  const create = useUsers((s) => s.create);
  const [f, setF] = useState({ name: "", email: "", password: "", role: "agent" as Role });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await create({ ...f, name: f.name.trim(), email: f.email.trim() });
      setF({ name: "", email: "", password: "", role: "agent" });
      useToasts.getState().push("success", t("users.created"));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const fields = fieldErrors(error);
  if (error instanceof ApiError && error.status === 409 && !fields.email) fields.email = t("auth.emailTaken");
  const general = error !== null && Object.keys(fields).filter((k) => k !== "_").length === 0;

  return (
    <form onSubmit={submit} className="space-y-4 rounded-2xl border border-slate-200 bg-white p-5" data-testid="user-form" noValidate>
      <h2 className="flex items-center gap-2 font-semibold text-slate-900">
        <UserPlus className="h-5 w-5 text-brand-600" />
        {t("users.add")}
      </h2>
      {general && <Banner testid="user-form-error">{fields._ ?? errorText(t, error)}</Banner>}
      <Field label={t("users.name")} error={fields.name} testid="user-name">
        <Input value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} data-testid="user-name" invalid={!!fields.name} />
      </Field>
      <Field label={t("users.email")} error={fields.email} testid="user-email">
        <Input type="email" value={f.email} onChange={(e) => setF({ ...f, email: e.target.value })} data-testid="user-email" invalid={!!fields.email} />
      </Field>
      <Field label={t("users.password")} error={fields.password} hint={t("auth.passwordHint")} testid="user-password">
        <Input type="password" autoComplete="new-password" value={f.password} onChange={(e) => setF({ ...f, password: e.target.value })} data-testid="user-password" invalid={!!fields.password} />
      </Field>
      <Field label={t("users.role")} error={fields.role} testid="user-role">
        <select className={selectClass} value={f.role} onChange={(e) => setF({ ...f, role: e.target.value as Role })} data-testid="user-role">
          <option value="agent">{t("users.role.agent")}</option>
          <option value="admin">{t("users.role.admin")}</option>
        </select>
      </Field>
      <Button type="submit" variant="primary" busy={busy} className="w-full" data-testid="user-submit">
        {t("users.add")}
      </Button>
    </form>
  );
}

export function UsersPage() {
  const t = useT();
  const me = useAuth((s) => s.user);
  const account = useAuth((s) => s.account);
  const { items, loading, loaded, error, load } = useUsers();

  useEffect(() => {
    void load();
  }, [load]);

  if (me?.role !== "admin") {
    return (
      <div className="flex-1 p-6">
        <EmptyState title={t("users.adminOnly")} icon={<ShieldCheck className="h-6 w-6" />} testid="users-forbidden" />
      </div>
    );
  }

  return (
    <div className="flex-1 overflow-y-auto p-4 md:p-6" data-testid="users-page">
      <PageHeader title={t("users.title")} subtitle={t("users.subtitle", { account: account?.name ?? "" })} />
      <div className="grid gap-6 lg:grid-cols-[1fr_22rem]">
        <div className="rounded-2xl border border-slate-200 bg-white">
          {loading && !loaded ? (
            <Spinner />
          ) : error && !loaded ? (
            <ErrorState error={error} onRetry={() => void load()} />
          ) : items.length === 0 ? (
            <EmptyState title={t("users.empty")} icon={<UsersIcon className="h-6 w-6" />} />
          ) : (
            <ul className="divide-y divide-slate-100" data-testid="user-list">
              {items.map((u) => (
                <li key={u.id} className="flex items-center gap-3 px-4 py-3" data-testid="user-row" data-user-id={u.id} data-role={u.role}>
                  <Avatar name={u.name} seed={u.id} size="sm" />
                  <div className="min-w-0 flex-1">
                    <div className="truncate text-sm font-medium text-slate-900">
                      {u.name}
                      {u.id === me.id && <span className="ml-1 text-xs font-normal text-slate-400">({t("users.you")})</span>}
                    </div>
                    <div className="truncate text-xs text-slate-500">{u.email}</div>
                  </div>
                  <span
                    className={cx(
                      "rounded-full px-2 py-0.5 text-xs font-medium",
                      u.role === "admin" ? "bg-violet-100 text-violet-700" : "bg-slate-100 text-slate-600",
                    )}
                  >
                    {t(u.role === "admin" ? "users.role.admin" : "users.role.agent")}
                  </span>
                </li>
              ))}
            </ul>
          )}
        </div>
        <AddUserForm />
      </div>
    </div>
  );
}
