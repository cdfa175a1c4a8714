// The rate card every bench prices with: input and output tokens of gpt-4o, per 1,000.
export const BENCH_CARD = {
  lines: [
    {
      id: "in",
      action: "chat.completion",
      match: { model: "gpt-4o" },
      quantity: "input_tokens",
      rate: "0.0025",
      per: "1000",
    },
    {
      id: "out",
      action: "chat.completion",
      match: { model: "gpt-4o" },
      quantity: "output_tokens",
      rate: "0.01",
      per: "1000",
    },
  ],
};
