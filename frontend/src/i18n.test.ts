import { describe, expect, it } from "vitest";
import { dictionaries, translate } from "./i18n";

describe("i18n", () => {
  it("has the same non-empty keys in every language", () => {
    const es = Object.keys(dictionaries.es).sort();
    expect(Object.keys(dictionaries.en).sort()).toEqual(es);
    for (const dict of Object.values(dictionaries)) for (const v of Object.values(dict)) expect(v.trim()).not.toBe("");
  });

  it("interpolates variables and keeps accents", () => {
    expect(translate("es", "common.confirmDelete", { name: "Peña 🌶️" })).toBe("¿Seguro que quieres eliminar «Peña 🌶️»?");
    expect(translate("en", "common.rateLimited", { s: 3 })).toBe("Too many requests; try again in 3 s");
  });
});
