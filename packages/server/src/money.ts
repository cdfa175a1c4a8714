import { formatAmount } from "@drawdown/core";
import { EVENT_COST_CURRENCY, EVENT_REVENUE_CURRENCY, type Row } from "@drawdown/storage";
import { Type } from "@sinclair/typebox";

/**
 * Revenue, cost and margin of usage events, kept apart per currency. An event's revenue is in
 * the currencies of the paid grants it drew (each apart), its cost in that of the cost table in
 * force (or of its reported cost); a tenant that sells credits in several currencies, or whose
 * cost tables changed currency, has sums that must not be added across them.
 */

/**
 * Joined to `usage_events e`: one row `m(currency, revenue, cost)` for the event's revenue, one
 * for its cost, each in its own currency, and one per other currency of its revenue (an event
 * that drew paid credits in several: `revenue_extra`). Filter with {@link MONEY_PRESENT} and
 * group by `m.currency`.
 */
export const MONEY_JOIN = `CROSS JOIN LATERAL (
    SELECT * FROM (VALUES
      (${EVENT_REVENUE_CURRENCY}, e.revenue, 0::numeric),
      (${EVENT_COST_CURRENCY}, 0::numeric, coalesce(e.cost, 0))) v
    UNION ALL
    SELECT x.currency, x.amount::numeric, 0::numeric
    FROM json_to_recordset(e.revenue_extra::json) AS x(currency text, amount text)
  ) m(currency, revenue, cost)`;
/** Keeps the {@link MONEY_JOIN} rows that carry money (a free event adds nothing to any currency). */
export const MONEY_PRESENT = "(m.revenue <> 0 OR m.cost <> 0)";
/** The sums a money query selects, per currency. */
export const MONEY_SUMS = "m.currency, sum(m.revenue)::text AS revenue, sum(m.cost)::text AS cost";

const Money = (description: string) =>
  Type.Union([Type.String(), Type.Null()], {
    description: `${description} A decimal string in \`currency\`; null when the amounts are in several currencies (see \`amounts\`).`,
  });

/** The response fields {@link moneyView} fills. */
export const MoneyFields = {
  currency: Type.Union([Type.String(), Type.Null()], {
    description:
      "The one currency of `revenue` and `cost`; null when there is none (free credits, no cost table) or several.",
  }),
  revenue: Money("Money the consumed credits were bought for (their cost basis)."),
  cost: Money("Cost of goods sold (unknown costs count as 0)."),
  margin: Money("revenue − cost."),
  amounts: Type.Array(
    Type.Object({
      currency: Type.Union([Type.String(), Type.Null()], {
        description: "Null for a reported cost with no cost table in force.",
      }),
      revenue: Type.String(),
      cost: Type.String(),
      margin: Type.String(),
    }),
    { description: "Revenue, cost and margin per currency, by currency; never added across currencies." },
  ),
};

/**
 * The money fields of a view from a money query's rows (`currency`, `revenue`, `cost`): per
 * currency always, and as single figures when there is at most one currency ("0" with none).
 */
export function moneyView(rows: readonly Row[]) {
  const amounts = rows
    .map((r) => {
      const revenue = BigInt(String(r.revenue));
      const cost = BigInt(String(r.cost));
      return { currency: r.currency === null ? null : String(r.currency), revenue, cost };
    })
    // By currency code (ASCII), the one without a currency last.
    .sort((a, b) => {
      if (a.currency === b.currency) return 0;
      if (a.currency === null || b.currency === null) return a.currency === null ? 1 : -1;
      return a.currency < b.currency ? -1 : 1;
    });
  const one = amounts.length <= 1;
  const only = amounts[0] ?? { currency: null, revenue: 0n, cost: 0n };
  return {
    currency: one ? only.currency : null,
    revenue: one ? formatAmount(only.revenue) : null,
    cost: one ? formatAmount(only.cost) : null,
    margin: one ? formatAmount(only.revenue - only.cost) : null,
    amounts: amounts.map((a) => ({
      currency: a.currency,
      revenue: formatAmount(a.revenue),
      cost: formatAmount(a.cost),
      margin: formatAmount(a.revenue - a.cost),
    })),
  };
}
