import { describe, expect, it } from "vitest";
import { initials, uuid } from "./util";

describe("util", () => {
  it("builds initials from names with accents and emoji", () => {
    expect(initials("José Peña 😀")).toBe("JP");
    expect(initials("ñandú")).toBe("Ñ");
    expect(initials("😀")).toBe("😀");
    expect(initials("  ")).toBe("?");
  });

  it("makes v4 uuids", () => {
    expect(uuid()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
