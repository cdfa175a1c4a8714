import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  type AlertLevel,
  type AlertRule,
  alertConditionHolds,
  alertRuleKey,
  DEFAULT_ALERT_RULES,
  EVENT_TYPE_NAMES,
  evaluateAlerts,
  matchesEventFilters,
  percentRemaining,
  retryDelay,
  validateAlertRules,
  validateEventFilters,
  validateWebhookUrl,
  WEBHOOK_RETRY,
} from "../src/index.js";

describe("the retry schedule", () => {
  test("exponential with equal jitter: each delay in [step/2, step], the step doubling to the cap", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: WEBHOOK_RETRY.maxAttempts - 1 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (n, r) => {
          const step = Math.min(WEBHOOK_RETRY.capMs, WEBHOOK_RETRY.baseMs * 2 ** (n - 1));
          const d = retryDelay(n, r);
          assert.ok(d !== null);
          assert.ok(d >= step / 2 && d <= step, `attempt ${n}: ${d} not in [${step / 2}, ${step}]`);
        },
      ),
    );
  });

  test("the bounds, exactly: 15–30 s after the first failure, 12 h at most, failed after 16 attempts", () => {
    assert.equal(retryDelay(1, 0), 15_000);
    assert.equal(retryDelay(1, 0.999999), 29_999);
    assert.equal(retryDelay(2, 0), 30_000);
    assert.ok(retryDelay(15, 0.999999)! > 12 * 3_600_000 - 100 && retryDelay(15, 0.999999)! < 12 * 3_600_000);
    assert.equal(retryDelay(15, 0), 6 * 3_600_000);
    assert.equal(retryDelay(16, 0.5), null);
    assert.equal(retryDelay(100, 0.5), null);
    // A random source out of range cannot leave the bounds.
    assert.equal(retryDelay(1, 5), 30_000);
    assert.equal(retryDelay(1, -1), 15_000);
  });

  test("monotone in the random draw, and never sooner for a later attempt's upper bound", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 13 }), fc.double({ min: 0, max: 0.99, noNaN: true }), (n, r) => {
        assert.ok(retryDelay(n, r)! <= retryDelay(n, r + 0.01)!);
        assert.ok(retryDelay(n, 0.999)! <= retryDelay(n + 1, 0.999)!);
      }),
    );
  });

  test("the whole schedule spans 1.35 to 2.7 days", () => {
    let low = 0;
    let high = 0;
    for (let n = 1; n < WEBHOOK_RETRY.maxAttempts; n++) {
      low += retryDelay(n, 0)!;
      high += retryDelay(n, 0.999999)!;
    }
    assert.ok(low > 32 * 3_600_000 && high < 66 * 3_600_000, `${low} to ${high} ms`);
  });
});

describe("event filters", () => {
  test('"*", exact types and a resource\'s wildcard match; webhook.test never does', () => {
    assert.ok(matchesEventFilters(["*"], "grant.created"));
    assert.ok(matchesEventFilters(["grant.created"], "grant.created"));
    assert.ok(!matchesEventFilters(["grant.created"], "grant.expired"));
    assert.ok(matchesEventFilters(["grant.*"], "grant.voided"));
    assert.ok(!matchesEventFilters(["grant.*"], "gift.claimed"));
    assert.ok(!matchesEventFilters(["*"], "webhook.test"));
  });

  test("validation: known types and wildcards only, deduplicated, 1 to 50", () => {
    assert.deepEqual(validateEventFilters(["grant.*", "*", "grant.*"]), {
      ok: true,
      value: ["grant.*", "*"],
    });
    for (const bad of [
      ["grant.exploded"],
      ["nothing.*"],
      ["webhook.test"],
      ["webhook.*"],
      [],
      ["Grant.created"],
      ["**"],
    ]) {
      const r = validateEventFilters(bad);
      assert.ok(!r.ok && r.error.code === "invalid_argument", JSON.stringify(bad));
    }
    assert.ok(!validateEventFilters(Array.from({ length: 51 }, () => "*")).ok);
    for (const t of EVENT_TYPE_NAMES) if (t !== "webhook.test") assert.ok(validateEventFilters([t]).ok, t);
  });
});

describe("webhook URLs", () => {
  test("http and https with a host, normalized", () => {
    for (const policy of ["allow", "deny"] as const)
      assert.deepEqual(validateWebhookUrl("https://Example.com/hooks?x=1", policy), {
        ok: true,
        value: "https://example.com/hooks?x=1",
      });
  });

  test("a private host: webhook_url_not_allowed under deny, accepted under allow", () => {
    assert.ok(validateWebhookUrl("http://127.0.0.1:8080/", "allow").ok);
    const r = validateWebhookUrl("http://127.0.0.1:8080/", "deny");
    assert.ok(!r.ok && r.error.code === "webhook_url_not_allowed");
    assert.match(r.error.message, /127\.0\.0\.1 is not a public address \(loopback\)/);
    assert.deepEqual(r.error.details, { field: "url" });
    // Structure is checked first: a bad URL is invalid_webhook_url whatever its host.
    const bad = validateWebhookUrl("ftp://127.0.0.1/", "deny");
    assert.ok(!bad.ok && bad.error.code === "invalid_webhook_url");
  });

  test("anything else is invalid_webhook_url", () => {
    for (const bad of [
      "ftp://example.com/",
      "javascript:alert(1)",
      "file:///etc/passwd",
      "data:text/plain,x",
      "/relative",
      "example.com/hooks",
      "https://user:pw@example.com/",
      "https://example.com/#frag",
      " https://example.com/",
      "https://exa mple.com/",
      `https://example.com/${"x".repeat(2048)}`,
      "",
    ]) {
      for (const policy of ["allow", "deny"] as const) {
        const r = validateWebhookUrl(bad, policy);
        assert.ok(!r.ok && r.error.code === "invalid_webhook_url", bad);
      }
    }
  });
});

describe("alert rules", () => {
  test("keys, defaults, and validation", () => {
    assert.deepEqual(DEFAULT_ALERT_RULES.map(alertRuleKey), [
      "percent_remaining:20",
      "percent_remaining:10",
      "exhausted",
    ]);
    assert.ok(validateAlertRules([...DEFAULT_ALERT_RULES, { kind: "expiring_soon", days: 7 }]).ok);
    const bad: AlertRule[][] = [
      [{ kind: "percent_remaining", percent: 0 }],
      [{ kind: "percent_remaining", percent: 100 }],
      [{ kind: "percent_remaining", percent: 1.5 }],
      [{ kind: "amount_remaining", amount: 0n }],
      [{ kind: "expiring_soon", days: 0 }],
      [{ kind: "expiring_soon", days: 366 }],
      [{ kind: "exhausted" }, { kind: "exhausted" }],
      [
        { kind: "expiring_soon", days: 1 },
        { kind: "expiring_soon", days: 2 },
      ],
      Array.from({ length: 21 }, (_, i) => ({ kind: "percent_remaining" as const, percent: i + 1 })),
    ];
    for (const rules of bad)
      assert.ok(
        !validateAlertRules(rules).ok,
        JSON.stringify(rules, (_k, v) => (typeof v === "bigint" ? `${v}n` : v)),
      );
  });

  test("conditions: at or below the threshold; no reference is 0%", () => {
    const at = (available: bigint, reference: bigint): AlertLevel => ({ available, reference });
    const p20: AlertRule = { kind: "percent_remaining", percent: 20 };
    assert.ok(alertConditionHolds(p20, at(20n, 100n)));
    assert.ok(!alertConditionHolds(p20, at(21n, 100n)));
    assert.ok(alertConditionHolds(p20, at(0n, 0n)));
    assert.ok(alertConditionHolds(p20, at(-5n, 100n)));
    assert.ok(alertConditionHolds({ kind: "amount_remaining", amount: 5n }, at(5n, 100n)));
    assert.ok(!alertConditionHolds({ kind: "amount_remaining", amount: 5n }, at(6n, 100n)));
    assert.ok(alertConditionHolds({ kind: "exhausted" }, at(0n, 100n)));
    assert.ok(!alertConditionHolds({ kind: "exhausted" }, at(1n, 100n)));
    assert.ok(!alertConditionHolds({ kind: "expiring_soon", days: 3 }, at(0n, 0n)));
    assert.equal(percentRemaining(at(20n, 175n)), "11.42");
    assert.equal(percentRemaining(at(1n, 3n)), "33.33");
    assert.equal(percentRemaining(at(-1n, 3n)), "0.00");
    assert.equal(percentRemaining(at(5n, 0n)), "0.00");
  });

  test("a rule removed from the list re-arms (its state is dropped)", () => {
    const d = evaluateAlerts([{ kind: "exhausted" }], new Set(["exhausted", "percent_remaining:20"]), {
      available: 0n,
      reference: 10n,
    });
    assert.deepEqual(d, { fire: [], rearm: ["percent_remaining:20"] });
  });

  test("model: over any sequence of levels, each rule fires once per crossing and re-arms after recovery", () => {
    const rule = fc.oneof(
      fc.integer({ min: 1, max: 99 }).map((percent): AlertRule => ({ kind: "percent_remaining", percent })),
      fc.bigInt({ min: 1n, max: 200n }).map((amount): AlertRule => ({ kind: "amount_remaining", amount })),
      fc.constant<AlertRule>({ kind: "exhausted" }),
    );
    const level = fc.record({
      available: fc.bigInt({ min: -50n, max: 300n }),
      reference: fc.bigInt({ min: 0n, max: 300n }),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(rule, { selector: alertRuleKey, maxLength: 6 }),
        fc.array(level, { maxLength: 40 }),
        (rules, levels) => {
          let fired = new Set<string>();
          const fires = new Map<string, number>();
          for (const l of levels) {
            const d = evaluateAlerts(rules, fired, l);
            for (const r of d.fire) fires.set(alertRuleKey(r), (fires.get(alertRuleKey(r)) ?? 0) + 1);
            fired = new Set([...fired, ...d.fire.map(alertRuleKey)].filter((k) => !d.rearm.includes(k)));
            // The state is exactly the rules whose condition holds now.
            assert.deepEqual(
              [...fired].sort(),
              rules
                .filter((r) => alertConditionHolds(r, l))
                .map(alertRuleKey)
                .sort(),
            );
          }
          // The model: fires = the times a condition went from false (armed at the start) to true.
          for (const r of rules) {
            let before = false;
            let crossings = 0;
            for (const l of levels) {
              const now = alertConditionHolds(r, l);
              if (now && !before) crossings++;
              before = now;
            }
            assert.equal(fires.get(alertRuleKey(r)) ?? 0, crossings, alertRuleKey(r));
          }
        },
      ),
    );
  });
});
