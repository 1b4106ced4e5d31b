// The rider: sign up, top up, unlock a simulated bike by its code, ride, and (when the
// simulated lock ends the ride inside a fence) get the receipt. In English and Chinese.
import { join } from "node:path";
import { IMAGES, expect, residentId, test } from "./fixtures";

const LOCALES = [
  { locale: "en-US", suffix: "", signUp: "Sign up", seed: 11 },
  { locale: "zh-CN", suffix: "-zh-CN", signUp: "注册", seed: 12 },
];

interface NearBike {
  id: string;
  lat: number;
  lon: number;
}

for (const l of LOCALES) {
  test.describe(`rider app (${l.locale})`, () => {
    test.use({
      locale: l.locale,
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
    });

    test("rider signs up, tops up, unlocks, rides", async ({ page, server }) => {
      const seed = l.seed + (Date.now() % 100_000) * 7;
      await page.goto(`${server.base}/rider/`);
      await page.locator("input[name=phone]").fill(`139${String(seed).padStart(8, "0").slice(-8)}`);
      await page.locator("input[name=name]").fill(l.suffix ? "小李" : "Li");
      await page.locator("input[name=real_name]").fill("李雷");
      await page.locator("input[name=id_number]").fill(residentId(seed));
      await page.getByRole("button", { name: l.signUp }).click();
      await expect(page.getByTestId("rider-map")).toBeVisible();
      await expect(page.getByTestId("nearby-count")).toContainText(/\d/);

      await page.getByTestId("tab-wallet").click();
      await page.getByTestId("top-up-2000").click();
      await expect(page.getByTestId("balance")).toContainText("20.00");

      // An available bike near the city centre, as the nearby API lists it.
      const token = await page.evaluate(() => JSON.parse(localStorage.getItem("wulian.rider")!).token as string);
      const near = await fetch(`${server.base}/api/v1/rider/bikes/nearby?lat=30.274&lon=120.155&radius_m=5000&limit=20`, {
        headers: { Authorization: `Bearer ${token}` },
      }).then((r) => r.json() as Promise<{ bikes: NearBike[] }>);
      expect(near.bikes.length).toBeGreaterThan(0);

      await page.getByTestId("tab-map").click();
      await page.waitForFunction(() => {
        const m = (window as unknown as { __wulianMap?: { loaded(): boolean } }).__wulianMap;
        return !!m && m.loaded();
      });
      // Try the nearest bikes until one unlocks (another simulated rider may take one first).
      let unlocked = false;
      for (const bike of near.bikes.slice(0, 5)) {
        await page.getByTestId("bike-code").fill(bike.id);
        if (!l.suffix && !unlocked) await page.screenshot({ path: join(IMAGES, "rider-map.png") });
        await page.getByTestId("unlock").click();
        const outcome = await Promise.race([
          page.getByTestId("ride").waitFor({ timeout: 30_000 }).then(() => "ride"),
          page.getByRole("alert").waitFor({ timeout: 30_000 }).then(() => "error"),
        ]);
        if (outcome === "ride") {
          unlocked = true;
          break;
        }
      }
      expect(unlocked).toBe(true);
      await expect(page.getByTestId("ride-fare")).toContainText(/\d/);
      await expect(page.getByTestId("ride-guidance")).toBeVisible();
      await page.screenshot({ path: join(IMAGES, `rider-ride${l.suffix}.png`) });

      // The simulated lock ends the ride by itself (seconds at time scale 60). Inside a fence
      // the trip settles and the receipt shows; outside, the grace guidance does.
      const end = await Promise.race([
        page.getByTestId("receipt").waitFor({ timeout: 120_000 }).then(() => "receipt"),
        page.getByText(/before|前移入/).waitFor({ timeout: 120_000 }).then(() => "grace"),
      ]);
      if (end === "receipt") {
        await expect(page.getByTestId("receipt-total")).toContainText(/\d/);
        await page.screenshot({ path: join(IMAGES, `rider-receipt${l.suffix}.png`) });
      } else {
        test.info().annotations.push({ type: "note", description: "the simulated rider parked outside a fence" });
      }
    });
  });
}
