import { divRound, formatAmount, inRange, SCALE, UNIT } from "./amount.js";
import { addInterval, type ExpiryPolicy, validateExpiryPolicy } from "./lifecycle.js";
import { fail, ok, type Result } from "./result.js";

/**
 * Top-ups and the price book, pure: what credits cost to buy, per currency (DESIGN.md,
 * "Price book"), and the decisions of auto top-up. Kept apart from the rate card, which says
 * what an action costs in credits.
 *
 * Money is units at scale 9, like credits (1 USD = 10^9 units), with its ISO 4217 code.
 * A price book states how many decimals its currency charges in (`decimals`, 2 for cents), and
 * every purchase's price is rounded once, to that many decimals, half away from zero (the one
 * rounding rule of Drawdown, {@link divRound}), after the discount is applied. The cost basis of
 * the credits bought (money per credit, scale 9) is the price divided by the credits, rounded
 * down: revenue recognized from them (cost basis × credits used or broken) never exceeds what
 * was paid.
 */

/** Bounds on price books and auto top-ups, shared with the API's validation. */
export const COMMERCE_LIMITS = {
  packsMax: 50,
  tiersMax: 20,
  commitmentDiscountsMax: 20,
  /** A pack id: 1 to 64 lowercase letters, digits, '-' or '_'. */
  packIdPattern: /^[a-z0-9][a-z0-9_-]{0,63}$/,
  nameMax: 200,
} as const;

/** A credit pack: a fixed number of credits at a fixed price, with the expiry of its credits. */
export interface Pack {
  readonly id: string;
  readonly name: string;
  /** Credits, in units; > 0. */
  readonly credits: bigint;
  /** Money, in units at scale 9; ≥ 0, with at most the book's `decimals`. */
  readonly price: bigint;
  /** `never` (the default for purchased packs) or `rolling` months after the payment is confirmed. */
  readonly expiry: ExpiryPolicy;
}

/**
 * A band of the graduated price of a custom amount: the credits from the previous band's
 * `upTo` (0 for the first) up to this one's cost `unitPrice` each; the last band is unbounded.
 */
export interface PriceTier {
  /** Credits, in units, where the band ends (exclusive); null: no end (the last band only). */
  readonly upTo: bigint | null;
  /** Money per credit, in units at scale 9; ≥ 0. */
  readonly unitPrice: bigint;
}

/**
 * A committed-use discount: a customer whose commitments in the book's currency in force at
 * the time of a purchase total at least `minCommitted` credits gets `percentOff` off the price
 * of every purchase (packs and custom amounts). The largest band reached applies; bands do not
 * add up.
 */
export interface CommitmentDiscount {
  /** Credits, in units; > 0. */
  readonly minCommitted: bigint;
  /** A whole percent from 1 to 99. */
  readonly percentOff: number;
}

/** What credits cost to buy in one currency. */
export interface PriceBook {
  readonly currency: string;
  /** Decimals the currency charges in (0 to 9); every price is rounded to them. */
  readonly decimals: number;
  readonly packs: readonly Pack[];
  /** Graduated bands for custom amounts, in order; empty: packs only. */
  readonly tiers: readonly PriceTier[];
  /** When credits bought as a custom amount expire: `never` or `rolling`. */
  readonly customExpiry: ExpiryPolicy;
  /** In order of `minCommitted`, with percents that never fall. */
  readonly commitmentDiscounts: readonly CommitmentDiscount[];
}

/** A price book as a caller writes it: `decimals` defaults to 2, expiries to `never`, lists to empty. */
export interface PriceBookInput {
  readonly currency: string;
  readonly decimals?: number;
  readonly packs?: readonly Pack[];
  readonly tiers?: readonly PriceTier[];
  readonly customExpiry?: ExpiryPolicy;
  readonly commitmentDiscounts?: readonly CommitmentDiscount[];
}

const CURRENCY = /^[A-Z]{3}$/;

/** Units of money in one step of the book's smallest charge (10^(9 − decimals)). */
const stepOf = (decimals: number): bigint => 10n ** BigInt(SCALE - decimals);

function checkPurchaseExpiry(policy: ExpiryPolicy | undefined, field: string): Result<ExpiryPolicy> {
  const checked = validateExpiryPolicy(policy ?? { kind: "never" });
  if (!checked.ok) return fail(checked.error.code, checked.error.message, { field });
  if (checked.value.kind === "period_end") {
    return fail(
      "invalid_argument",
      'Purchased credits have no period: their expiry is "never" or "rolling".',
      {
        field,
      },
    );
  }
  return checked;
}

/**
 * Validates a price book and fills its defaults. Fails with `invalid_argument` or
 * `invalid_amount`, `details.field` naming the field. A book sells something: at least one
 * pack or one tier. Pack ids are unique; pack prices have at most `decimals` decimals; tier
 * ends rise strictly and only the last tier is unbounded; commitment bands rise strictly and
 * their percents never fall (committing more never costs more).
 */
export function validatePriceBook(input: PriceBookInput): Result<PriceBook> {
  if (typeof input.currency !== "string" || !CURRENCY.test(input.currency)) {
    return fail("invalid_argument", 'The currency is an ISO 4217 code such as "USD".', { field: "currency" });
  }
  const decimals = input.decimals ?? 2;
  if (!Number.isInteger(decimals) || decimals < 0 || decimals > SCALE) {
    return fail("invalid_argument", `decimals is a whole number from 0 to ${SCALE}.`, { field: "decimals" });
  }
  const step = stepOf(decimals);
  const packs = input.packs ?? [];
  const tiers = input.tiers ?? [];
  const bands = input.commitmentDiscounts ?? [];
  if (packs.length > COMMERCE_LIMITS.packsMax)
    return fail("invalid_argument", `A price book has at most ${COMMERCE_LIMITS.packsMax} packs.`, {
      field: "packs",
    });
  if (tiers.length > COMMERCE_LIMITS.tiersMax)
    return fail("invalid_argument", `A price book has at most ${COMMERCE_LIMITS.tiersMax} tiers.`, {
      field: "tiers",
    });
  if (bands.length > COMMERCE_LIMITS.commitmentDiscountsMax)
    return fail(
      "invalid_argument",
      `A price book has at most ${COMMERCE_LIMITS.commitmentDiscountsMax} commitment discounts.`,
      { field: "commitment_discounts" },
    );
  if (packs.length === 0 && tiers.length === 0)
    return fail("invalid_argument", "A price book sells something: give at least one pack or one tier.", {
      field: "packs",
    });
  const ids = new Set<string>();
  const outPacks: Pack[] = [];
  for (const [i, p] of packs.entries()) {
    const field = `packs/${i}`;
    if (typeof p.id !== "string" || !COMMERCE_LIMITS.packIdPattern.test(p.id))
      return fail("invalid_argument", "A pack id is 1 to 64 lowercase letters, digits, '-' or '_'.", {
        field: `${field}/id`,
      });
    if (ids.has(p.id))
      return fail("invalid_argument", `Pack id "${p.id}" is listed twice.`, { field: `${field}/id` });
    ids.add(p.id);
    if (typeof p.name !== "string" || p.name.trim() === "" || p.name.length > COMMERCE_LIMITS.nameMax)
      return fail("invalid_argument", `A pack's name is 1 to ${COMMERCE_LIMITS.nameMax} characters.`, {
        field: `${field}/name`,
      });
    if (typeof p.credits !== "bigint" || p.credits <= 0n || !inRange(p.credits))
      return fail("invalid_amount", "A pack's credits are positive.", { field: `${field}/credits` });
    if (typeof p.price !== "bigint" || p.price < 0n || !inRange(p.price))
      return fail("invalid_amount", "A pack's price is an amount ≥ 0.", { field: `${field}/price` });
    if (p.price % step !== 0n)
      return fail("invalid_amount", `A pack's price has at most ${decimals} decimals in this book.`, {
        field: `${field}/price`,
      });
    const expiry = checkPurchaseExpiry(p.expiry, `${field}/expiry`);
    if (!expiry.ok) return expiry;
    outPacks.push({ id: p.id, name: p.name, credits: p.credits, price: p.price, expiry: expiry.value });
  }
  const outTiers: PriceTier[] = [];
  let previous = 0n;
  for (const [i, t] of tiers.entries()) {
    const field = `tiers/${i}`;
    const last = i === tiers.length - 1;
    if (typeof t.unitPrice !== "bigint" || t.unitPrice < 0n || !inRange(t.unitPrice))
      return fail("invalid_amount", "A tier's unit price is an amount ≥ 0.", {
        field: `${field}/unit_price`,
      });
    if (last) {
      if (t.upTo !== null)
        return fail("invalid_argument", "The last tier has no end (up_to null): every amount has a price.", {
          field: `${field}/up_to`,
        });
    } else if (typeof t.upTo !== "bigint" || t.upTo <= previous || !inRange(t.upTo)) {
      return fail("invalid_argument", "PriceTier ends rise strictly; only the last tier has no end.", {
        field: `${field}/up_to`,
      });
    }
    if (t.upTo !== null) previous = t.upTo;
    outTiers.push({ upTo: t.upTo, unitPrice: t.unitPrice });
  }
  const outBands: CommitmentDiscount[] = [];
  let lastMin = 0n;
  let lastPercent = 0;
  for (const [i, b] of bands.entries()) {
    const field = `commitment_discounts/${i}`;
    if (typeof b.minCommitted !== "bigint" || b.minCommitted <= lastMin || !inRange(b.minCommitted))
      return fail("invalid_argument", "Commitment bands are positive and rise strictly.", {
        field: `${field}/min_committed`,
      });
    if (
      !Number.isInteger(b.percentOff) ||
      b.percentOff < 1 ||
      b.percentOff > 99 ||
      b.percentOff < lastPercent
    )
      return fail(
        "invalid_argument",
        "A commitment discount is a whole percent from 1 to 99, never less than a smaller band's.",
        { field: `${field}/percent_off` },
      );
    lastMin = b.minCommitted;
    lastPercent = b.percentOff;
    outBands.push({ minCommitted: b.minCommitted, percentOff: b.percentOff });
  }
  const customExpiry = checkPurchaseExpiry(input.customExpiry, "custom_expiry");
  if (!customExpiry.ok) return customExpiry;
  return ok({
    currency: input.currency,
    decimals,
    packs: outPacks,
    tiers: outTiers,
    customExpiry: customExpiry.value,
    commitmentDiscounts: outBands,
  });
}

/** The percent off for a customer committed to `committed` credits: the largest band reached, or 0. */
export function commitmentPercent(book: PriceBook, committed: bigint): number {
  let percent = 0;
  for (const b of book.commitmentDiscounts) if (committed >= b.minCommitted) percent = b.percentOff;
  return percent;
}

/**
 * The exact graduated cost of `credits` units over the tiers, at scale 18 (credit units times
 * money units per credit): each credit is priced by the band it falls in, like tax brackets,
 * so buying more never costs less.
 */
export function graduatedCost(tiers: readonly PriceTier[], credits: bigint): bigint {
  let total = 0n;
  let from = 0n;
  for (const t of tiers) {
    if (credits <= from) break;
    const to = t.upTo === null || t.upTo > credits ? credits : t.upTo;
    total += (to - from) * t.unitPrice;
    from = to;
  }
  return total;
}

/** What a purchase costs and what its credits carry. */
export interface Quote {
  readonly currency: string;
  /** Credits bought, in units. */
  readonly credits: bigint;
  /** The pack bought; null for a custom amount. */
  readonly packId: string | null;
  /** The price before any discount, rounded like the price. */
  readonly listPrice: bigint;
  /** The committed-use discount applied, a whole percent (0: none). */
  readonly discountPercent: number;
  /** What the customer pays: money units at scale 9, a whole number of the book's smallest step. */
  readonly price: bigint;
  /** Money per credit, at scale 9: price ÷ credits rounded down. */
  readonly costBasis: bigint;
  /** When the credits expire once paid for. */
  readonly expiry: ExpiryPolicy;
}

/**
 * Rounds `numerator / denominator` money units to the book's decimals, once, half away from
 * zero: the result is a whole number of steps of 10^(9 − decimals) units.
 */
function roundToBook(numerator: bigint, denominator: bigint, decimals: number): bigint {
  const step = stepOf(decimals);
  return divRound(numerator, denominator * step) * step;
}

/** Money per credit at scale 9 for `price` paid for `credits` units, rounded down (never overstating revenue). */
export function costBasisOf(price: bigint, credits: bigint): bigint {
  if (credits <= 0n) throw new RangeError("credits must be positive");
  return (price * UNIT) / credits;
}

/**
 * Prices a custom amount of credits over the book's tiers, with the committed-use discount for
 * `committed` credits. Fails with `invalid_argument` when the book has no tiers (packs only), or
 * `invalid_amount` for an amount that is not positive.
 */
export function priceCredits(book: PriceBook, credits: bigint, committed = 0n): Result<Quote> {
  if (credits <= 0n || !inRange(credits))
    return fail("invalid_amount", "The credits to buy are positive.", { field: "credits" });
  if (book.tiers.length === 0)
    return fail("invalid_argument", `The ${book.currency} price book sells packs only; name a pack_id.`, {
      field: "credits",
    });
  const exact = graduatedCost(book.tiers, credits);
  return ok(quote(book, credits, null, exact, UNIT, committed, book.customExpiry));
}

/** Prices one pack of the book, with the committed-use discount for `committed` credits. */
export function pricePack(book: PriceBook, packId: string, committed = 0n): Result<Quote> {
  const pack = book.packs.find((p) => p.id === packId);
  if (!pack)
    return fail("not_found", `The ${book.currency} price book has no pack "${packId}".`, {
      field: "pack_id",
    });
  return ok(quote(book, pack.credits, pack.id, pack.price, 1n, committed, pack.expiry));
}

function quote(
  book: PriceBook,
  credits: bigint,
  packId: string | null,
  numerator: bigint,
  denominator: bigint,
  committed: bigint,
  expiry: ExpiryPolicy,
): Quote {
  const discountPercent = commitmentPercent(book, committed);
  const listPrice = roundToBook(numerator, denominator, book.decimals);
  // The discount applies to the exact amount, and the result rounds once.
  const price = roundToBook(numerator * BigInt(100 - discountPercent), denominator * 100n, book.decimals);
  return {
    currency: book.currency,
    credits,
    packId,
    listPrice,
    discountPercent,
    price,
    costBasis: costBasisOf(price, credits),
    expiry,
  };
}

/** When credits paid for at `paidAt` expire under a purchase expiry policy (`never` or `rolling`). */
export function purchaseExpiry(policy: ExpiryPolicy, paidAt: number): number | null {
  return policy.kind === "rolling" ? addInterval(paidAt, { unit: "month", count: policy.months }) : null;
}

// ---------------------------------------------------------------------------------------------
// Auto top-up
// ---------------------------------------------------------------------------------------------

/**
 * What an auto top-up buys when the wallet's balance falls below `threshold`: a fixed amount of
 * credits, enough credits to bring the balance to a target, or one pack.
 */
export type TopUpQuantity =
  | { readonly kind: "amount"; readonly credits: bigint }
  | { readonly kind: "target"; readonly balance: bigint }
  | { readonly kind: "pack"; readonly packId: string };

/** A wallet's auto top-up settings. */
export interface AutoTopUpConfig {
  /** Credits, in units; a top-up is due when the balance is below it. */
  readonly threshold: bigint;
  readonly buy: TopUpQuantity;
  readonly currency: string;
  /** The most money auto top-up may spend per calendar month (UTC), in units at scale 9; > 0. */
  readonly monthlyCap: bigint;
}

/** Validates an auto top-up's settings: threshold ≥ 0, a target above the threshold, a positive cap. */
export function validateAutoTopUp(config: AutoTopUpConfig): Result<AutoTopUpConfig> {
  if (typeof config.threshold !== "bigint" || config.threshold < 0n || !inRange(config.threshold))
    return fail("invalid_amount", "The threshold is an amount ≥ 0.", { field: "threshold" });
  if (typeof config.currency !== "string" || !CURRENCY.test(config.currency))
    return fail("invalid_argument", 'The currency is an ISO 4217 code such as "USD".', { field: "currency" });
  if (typeof config.monthlyCap !== "bigint" || config.monthlyCap <= 0n || !inRange(config.monthlyCap))
    return fail("invalid_amount", "The monthly cap is a positive amount of money.", { field: "monthly_cap" });
  const buy = config.buy;
  switch (buy.kind) {
    case "amount":
      if (buy.credits <= 0n || !inRange(buy.credits))
        return fail("invalid_amount", "The amount to buy is positive.", { field: "amount" });
      break;
    case "target":
      if (buy.balance <= config.threshold || !inRange(buy.balance))
        return fail("invalid_argument", "The target balance must be above the threshold.", {
          field: "target_balance",
        });
      break;
    case "pack":
      if (!COMMERCE_LIMITS.packIdPattern.test(buy.packId))
        return fail("invalid_argument", "A pack id is 1 to 64 lowercase letters, digits, '-' or '_'.", {
          field: "pack_id",
        });
      break;
    default:
      return fail("invalid_argument", "An auto top-up buys an amount, up to a target balance, or a pack.");
  }
  return ok(config);
}

/** The start of the calendar month (UTC) holding `t`. */
export function monthStart(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** The start of the calendar month (UTC) after the one holding `t`. */
export function nextMonthStart(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** What an auto top-up check decided. */
export type TopUpDecision =
  /** The balance is at or above the threshold: nothing to buy. */
  | { readonly kind: "not_needed" }
  /** Buy this. */
  | { readonly kind: "buy"; readonly quote: Quote };

/**
 * Decides an auto top-up for a wallet holding `balance` credits, when `spent` money has gone
 * to auto top-ups this calendar month (pending and paid purchases count; failed ones do not).
 * A top-up is made whole or not at all: when its price does not fit in what is left of the
 * month's cap, it fails with `auto_top_up_cap_reached` and nothing is bought (the cap is never
 * exceeded, and a partial top-up would surprise). Pricing failures (no such pack, packs only)
 * come back as they are.
 */
export function decideTopUp(input: {
  readonly config: AutoTopUpConfig;
  readonly book: PriceBook;
  readonly balance: bigint;
  readonly spent: bigint;
  readonly committed: bigint;
}): Result<TopUpDecision> {
  const { config, book, balance, spent, committed } = input;
  if (balance >= config.threshold) return ok({ kind: "not_needed" });
  const buy = config.buy;
  const priced =
    buy.kind === "pack"
      ? pricePack(book, buy.packId, committed)
      : priceCredits(book, buy.kind === "amount" ? buy.credits : buy.balance - balance, committed);
  if (!priced.ok) return priced;
  const left = config.monthlyCap - spent;
  if (priced.value.price > left) {
    return fail(
      "auto_top_up_cap_reached",
      `This month's auto top-up cap is spent: the next top-up costs ${formatAmount(priced.value.price)} ${book.currency} and ${formatAmount(left > 0n ? left : 0n)} is left; it resets on the 1st.`,
      { price: formatAmount(priced.value.price), cap_left: formatAmount(left > 0n ? left : 0n) },
    );
  }
  return ok({ kind: "buy", quote: priced.value });
}

/**
 * Decides the auto top-up tried before a denial (overage.ts): `need` more credits would let the
 * request through. It buys what the configuration buys (its amount, its pack; a target buys up
 * to the target or the need, whichever is more), whatever the threshold; the caller buys again
 * while the need is not covered. The month's cap holds as in {@link decideTopUp}.
 */
export function decideShortfallTopUp(input: {
  readonly config: AutoTopUpConfig;
  readonly book: PriceBook;
  readonly balance: bigint;
  readonly need: bigint;
  readonly spent: bigint;
  readonly committed: bigint;
}): Result<Quote> {
  const { config, book, balance, need, spent, committed } = input;
  const buy = config.buy;
  const toTarget = buy.kind === "target" ? buy.balance - balance : 0n;
  const priced =
    buy.kind === "pack"
      ? pricePack(book, buy.packId, committed)
      : priceCredits(
          book,
          buy.kind === "amount" ? buy.credits : toTarget > need ? toTarget : need,
          committed,
        );
  if (!priced.ok) return priced;
  const left = config.monthlyCap - spent;
  if (priced.value.price > left) {
    return fail(
      "auto_top_up_cap_reached",
      `This month's auto top-up cap is spent: the next top-up costs ${formatAmount(priced.value.price)} ${book.currency} and ${formatAmount(left > 0n ? left : 0n)} is left; it resets on the 1st.`,
      { price: formatAmount(priced.value.price), cap_left: formatAmount(left > 0n ? left : 0n) },
    );
  }
  return ok(priced.value);
}
