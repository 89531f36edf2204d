import { useState, type ChangeEvent, type FormEvent, type ReactNode } from "react";
import { Link, useLocation, useNavigate } from "react-router";
import { ApiError, fieldErrors } from "../api/client";
import { LangSwitch } from "../components/Shell";
import { Banner, Button, Field, Input } from "../components/ui";
import { useT } from "../i18n";
import { errorText } from "../lib/util";
import { useAuth } from "../stores/auth";

function AuthCard({ title, children, footer }: { title: string; children: ReactNode; footer: ReactNode }) {
  const t = useT();
  return (
    <div className="flex min-h-full items-center justify-center bg-gradient-to-br from-brand-50 via-white to-slate-100 p-4">
      <div className="w-full max-w-sm">
        <div className="mb-6 flex items-center justify-between">
          <div className="flex items-center gap-2">
            <img src="/favicon.svg" alt="" className="h-10 w-10" />
            <div>
              <div className="text-lg font-semibold">{t("app.name")}</div>
              <div className="text-xs text-slate-500">{t("app.tagline")}</div>
            </div>
          </div>
          <LangSwitch />
        </div>
        <div className="rounded-2xl border border-slate-200 bg-white p-6 shadow-sm">
          <h1 className="mb-5 text-lg font-semibold text-slate-900">{title}</h1>
          {children}
        </div>
        <p className="mt-4 text-center text-sm text-slate-600">{footer}</p>
      </div>
    </div>
  );
}

function useAfterAuth() {
  const navigate = useNavigate();
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from;
  return () => navigate(from && !from.startsWith("/login") ? from : "/inbox", { replace: true });
}

export function LoginPage() {
  const t = useT();
  const login = useAuth((s) => s.login);
  const expired = useAuth((s) => s.expired);
  const done = useAfterAuth();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await login(email.trim(), password);
      done();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  const fields = fieldErrors(error);
  return (
    <AuthCard
      title={t("auth.login.title")}
      footer={
        <>
          {t("auth.login.noAccount")}{" "}
          <Link to="/register" className="font-medium text-brand-700 hover:underline" data-testid="to-register">
            {t("auth.login.toRegister")}
          </Link>
        </>
      }
    >
      <form onSubmit={submit} className="space-y-4" data-testid="login-form" noValidate>
        {expired && !error && <Banner kind="info" testid="session-expired">{t("auth.sessionExpired")}</Banner>}
        {error !== null && Object.keys(fields).length === 0 && <Banner testid="login-error">{errorText(t, error)}</Banner>}
        <Field label={t("auth.email")} error={fields.email} testid="login-email">
          <Input type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} data-testid="login-email" invalid={!!fields.email} />
        </Field>
        <Field label={t("auth.password")} error={fields.password} testid="login-password">
          <Input type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} data-testid="login-password" invalid={!!fields.password} />
        </Field>
        <Button type="submit" variant="primary" busy={busy} className="w-full" data-testid="login-submit">
          {t("auth.login.submit")}
        </Button>
      </form>
    </AuthCard>
  );
}

export function RegisterPage() {
  const t = useT();
  const register = useAuth((s) => s.register);
  const done = useAfterAuth();
  const [form, setForm] = useState({ account_name: "", name: "", email: "", password: "" });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const set = (k: keyof typeof form) => (e: ChangeEvent<HTMLInputElement>) => setForm({ ...form, [k]: e.target.value });

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await register({ ...form, email: form.email.trim(), account_name: form.account_name.trim(), name: form.name.trim() });
      done();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  const fields = fieldErrors(error);
  if (error instanceof ApiError && error.status === 409 && !fields.email) fields.email = t("auth.emailTaken");
  return (
    <AuthCard
      title={t("auth.register.title")}
      footer={
        <>
          {t("auth.register.haveAccount")}{" "}
          <Link to="/login" className="font-medium text-brand-700 hover:underline" data-testid="to-login">
            {t("auth.register.toLogin")}
          </Link>
        </>
      }
    >
      <form onSubmit={submit} className="space-y-4" data-testid="register-form" noValidate>
        {error !== null && Object.keys(fields).length === 0 && <Banner testid="register-error">{errorText(t, error)}</Banner>}
        {fields._ && <Banner testid="register-error">{fields._}</Banner>}
        <Field label={t("auth.accountName")} error={fields.account_name} testid="register-account">
          <Input autoComplete="organization" value={form.account_name} onChange={set("account_name")} data-testid="register-account" invalid={!!fields.account_name} />
        </Field>
        <Field label={t("auth.name")} error={fields.name} testid="register-name">
          <Input autoComplete="name" value={form.name} onChange={set("name")} data-testid="register-name" invalid={!!fields.name} />
        </Field>
        <Field label={t("auth.email")} error={fields.email} testid="register-email">
          <Input type="email" autoComplete="email" value={form.email} onChange={set("email")} data-testid="register-email" invalid={!!fields.email} />
        </Field>
        <Field label={t("auth.password")} error={fields.password} hint={t("auth.passwordHint")} testid="register-password">
          <Input type="password" autoComplete="new-password" minLength={8} maxLength={128} value={form.password} onChange={set("password")} data-testid="register-password" invalid={!!fields.password} />
        </Field>
        <Button type="submit" variant="primary" busy={busy} className="w-full" data-testid="register-submit">
          {t("auth.register.submit")}
        </Button>
      </form>
    </AuthCard>
  );
}
