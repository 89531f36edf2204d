import { Ban, CheckCircle2, KeyRound, Trash2, UserPlus, Users as UsersIcon } from "lucide-react";
import { useEffect, useState, type FormEvent } from "react";
import { ApiError, fieldErrors } from "../api/client";
import { usersApi } from "../api/endpoints";
import type { Role, User } from "../api/types";
import { Avatar, Banner, Button, ConfirmDialog, EmptyState, ErrorState, Field, Input, PageHeader, Spinner, selectClass } from "../components/ui";
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

/** Anyone's own password; the other sessions of the user end (API.md). */
function PasswordForm() {
  const t = useT();
  const [f, setF] = useState({ current: "", next: "" });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await usersApi.changePassword(f.current, f.next);
      setF({ current: "", next: "" });
      useToasts.getState().push("success", t("users.password.done"));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const fields = fieldErrors(error);
  if (error instanceof ApiError && error.code === "wrong_password") fields.current_password = t("users.password.wrong");
  const general = error !== null && !fields.current_password && !fields.new_password;

  return (
    <form onSubmit={submit} className="space-y-4 rounded-2xl border border-slate-200 bg-white p-5" data-testid="password-form" noValidate>
      <h2 className="flex items-center gap-2 font-semibold text-slate-900">
        <KeyRound className="h-5 w-5 text-brand-600" />
        {t("users.password.title")}
      </h2>
      {general && <Banner testid="password-form-error">{errorText(t, error)}</Banner>}
      <Field label={t("users.password.current")} error={fields.current_password} testid="password-current">
        <Input type="password" autoComplete="current-password" value={f.current} onChange={(e) => setF({ ...f, current: e.target.value })} data-testid="password-current" invalid={!!fields.current_password} />
      </Field>
      <Field label={t("users.password.new")} error={fields.new_password} hint={t("auth.passwordHint")} testid="password-new">
        <Input type="password" autoComplete="new-password" value={f.next} onChange={(e) => setF({ ...f, next: e.target.value })} data-testid="password-new" invalid={!!fields.new_password} />
      </Field>
      <Button type="submit" variant="primary" busy={busy} className="w-full" data-testid="password-submit">
        {t("users.password.submit")}
      </Button>
    </form>
  );
}

/** One user of the account, with what an admin may do to them (never to themself). */
function UserRow({ user, isMe, canManage }: { user: User; isMe: boolean; canManage: boolean }) {
  const t = useT();
  const update = useUsers((s) => s.update);
  const remove = useUsers((s) => s.remove);
  const toast = useToasts((s) => s.push);
  const [busy, setBusy] = useState<string | null>(null);
  const [confirm, setConfirm] = useState(false);

  const act = async (what: string, fn: () => Promise<unknown>, done: string) => {
    setBusy(what);
    try {
      await fn();
      toast("success", done);
    } catch (e) {
      toast("error", errorText(t, e));
    } finally {
      setBusy(null);
    }
  };
  const roleLabel = (r: Role) => t(r === "admin" ? "users.role.admin" : "users.role.agent");

  return (
    <li
      className={cx("flex flex-wrap items-center gap-3 px-4 py-3", user.disabled && "bg-slate-50")}
      data-testid="user-row"
      data-user-id={user.id}
      data-role={user.role}
      data-disabled={user.disabled ? "true" : "false"}
    >
      <Avatar name={user.name} seed={user.id} size="sm" />
      <div className="min-w-0 flex-1">
        <div className={cx("truncate text-sm font-medium", user.disabled ? "text-slate-400 line-through" : "text-slate-900")}>
          {user.name}
          {isMe && <span className="ml-1 text-xs font-normal text-slate-400">({t("users.you")})</span>}
        </div>
        <div className="truncate text-xs text-slate-500">{user.email}</div>
      </div>
      {user.disabled && (
        <span className="rounded-full bg-rose-100 px-2 py-0.5 text-xs font-medium text-rose-700" data-testid="user-disabled-badge">
          {t("users.disabled")}
        </span>
      )}
      {isMe || !canManage ? (
        <span className={cx("rounded-full px-2 py-0.5 text-xs font-medium", user.role === "admin" ? "bg-violet-100 text-violet-700" : "bg-slate-100 text-slate-600")}>
          {roleLabel(user.role)}
        </span>
      ) : (
        <div className="flex flex-wrap items-center gap-2">
          <select
            className={cx(selectClass.replace("w-full", ""), "w-32 py-1 text-xs")}
            value={user.role}
            aria-label={t("users.actions.role", { name: user.name })}
            disabled={busy !== null}
            onChange={(e) => {
              const role = e.target.value as Role;
              void act("role", () => update(user.id, { role }), t("users.roleToast", { name: user.name, role: roleLabel(role) }));
            }}
            data-testid="user-role-select"
          >
            <option value="agent">{t("users.role.agent")}</option>
            <option value="admin">{t("users.role.admin")}</option>
          </select>
          <Button
            size="sm"
            busy={busy === "disabled"}
            onClick={() =>
              void act(
                "disabled",
                () => update(user.id, { disabled: !user.disabled }),
                t(user.disabled ? "users.enabledToast" : "users.disabledToast", { name: user.name }),
              )
            }
            data-testid="user-toggle-disabled"
          >
            {user.disabled ? <CheckCircle2 className="h-4 w-4" /> : <Ban className="h-4 w-4" />}
            {t(user.disabled ? "users.actions.enable" : "users.actions.disable")}
          </Button>
          <Button size="sm" variant="danger" busy={busy === "remove"} onClick={() => setConfirm(true)} data-testid="user-remove">
            <Trash2 className="h-4 w-4" />
            {t("users.actions.remove")}
          </Button>
        </div>
      )}
      {confirm && (
        <ConfirmDialog
          title={t("users.removeTitle")}
          text={t("users.removeConfirm", { name: user.name })}
          confirmLabel={t("users.actions.remove")}
          onClose={() => setConfirm(false)}
          onConfirm={() => act("remove", () => remove(user.id), t("users.removed"))}
        />
      )}
    </li>
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

  if (!me) return null;
  const isAdmin = me.role === "admin";

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
                <UserRow key={u.id} user={u} isMe={u.id === me.id} canManage={isAdmin} />
              ))}
            </ul>
          )}
        </div>
        <div className="space-y-6">
          {isAdmin && <AddUserForm />}
          <PasswordForm />
        </div>
      </div>
    </div>
  );
}
