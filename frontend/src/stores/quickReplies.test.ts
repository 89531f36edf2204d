import { describe, expect, it } from "vitest";
import type { QuickReply } from "../api/types";
import { fillTemplate, matchQuickReplies } from "./quickReplies";

const reply = (shortcut: string, body: string): QuickReply => ({ id: shortcut, shortcut, body, created_at: "2026-12-01T00:00:00Z" });

describe("quick replies", () => {
  const items = [reply("saludo", "¡Hola {{name}}!"), reply("precios", "Lista de precios"), reply("envio-gratis", "Envío gratis desde 50 €")];

  it("lists shortcuts that start with what follows the slash first, then other matches", () => {
    expect(matchQuickReplies(items, "").map((r) => r.shortcut)).toEqual(["saludo", "precios", "envio-gratis"]);
    expect(matchQuickReplies(items, "pre").map((r) => r.shortcut)).toEqual(["precios"]);
    expect(matchQuickReplies(items, "GRATIS").map((r) => r.shortcut)).toEqual(["envio-gratis"]);
    expect(matchQuickReplies(items, "s").map((r) => r.shortcut)).toEqual(["saludo", "precios", "envio-gratis"]);
    expect(matchQuickReplies(items, "zzz")).toEqual([]);
  });

  it("fills {{name}} with the contact's name, however it is spaced", () => {
    expect(fillTemplate("¡Hola {{name}}! Adiós {{ NAME }}", { name: "José Peña 😀" })).toBe("¡Hola José Peña 😀! Adiós José Peña 😀");
    expect(fillTemplate("Sin nombre", { name: "Ana" })).toBe("Sin nombre");
  });
});
