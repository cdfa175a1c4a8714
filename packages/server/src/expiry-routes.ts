import type { PolicySource, SourceExpiryPolicy } from "@drawdown/core";
import { POLICY_SOURCES } from "@drawdown/core";
import { Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import { ExpiryWire } from "./lifecycle-routes.js";
import { must, okReply, type Route, route } from "./routes.js";

/**
 * Expiry policies per source: when grants that name no expiry of their own expire, by where
 * their credits came from (purchased packs never, enterprise credits 12 months on...).
 */

const SourceExpiryWire = Type.Object(
  {
    kind: Type.Union([Type.Literal("never"), Type.Literal("rolling")]),
    months: Type.Optional(Type.Integer({ minimum: 1, maximum: 120 })),
  },
  { additionalProperties: false },
);

const ExpiryPoliciesView = Type.Object(
  {
    object: Type.Literal("expiry_policies"),
    policies: Type.Object(
      Object.fromEntries(POLICY_SOURCES.map((s) => [s, SourceExpiryWire])) as Record<
        PolicySource,
        typeof SourceExpiryWire
      >,
      { additionalProperties: false },
    ),
  },
  { title: "ExpiryPolicies" },
);

const ExpiryPolicySet = Type.Object(
  {
    source: Type.Union(
      POLICY_SOURCES.map((s) => Type.Literal(s)),
      { description: "The grant source the policy is for; plan and rollover credits follow their plan." },
    ),
    expiry: ExpiryWire,
  },
  { additionalProperties: false, title: "ExpiryPolicySet" },
);

const view = (policies: Record<PolicySource, SourceExpiryPolicy>) => ({
  object: "expiry_policies" as const,
  policies,
});

export const EXPIRY_ROUTES: readonly Route[] = [
  route({
    method: "GET",
    url: "/v1/expiry_policies",
    operationId: "getExpiryPolicies",
    tag: "Grants",
    summary: "Expiry policies per source",
    description:
      'The default expiry of grants from each source (purchase, top-up, gift, promo, contract, adjustment) that name no expiry of their own: `never` (the default) or `rolling` months after the grant becomes effective. A grant with `expires_at` keeps it; `"expires_at": null` never expires.',
    access: "read",
    response: ExpiryPoliciesView,
    errors: [],
    handle: async ({ store, tenantId }) => okReply(view(await store.expiryPolicies(tenantId))),
  }),
  route({
    method: "POST",
    url: "/v1/expiry_policies",
    operationId: "setExpiryPolicy",
    tag: "Grants",
    summary: "Set a source's expiry policy",
    description:
      "Sets the default expiry of one source's grants, for grants issued from now on; grants already issued keep their expiry. `period_end` is for plans only.",
    access: "secret",
    body: ExpiryPolicySet,
    response: ExpiryPoliciesView,
    errors: ["invalid_argument"],
    handle: async ({ store, tx, tenantId, body }) => {
      if (body.expiry.kind === "rolling" && body.expiry.months === undefined)
        throw new ApiError("invalid_argument", "expiry.months is required for a rolling expiry.", {
          details: { field: "expiry.months" },
        });
      const policy =
        body.expiry.kind === "rolling"
          ? { kind: "rolling" as const, months: body.expiry.months! }
          : { kind: body.expiry.kind };
      return okReply(view(must(await store.setExpiryPolicy(tx, tenantId, body.source, policy))));
    },
  }),
];
