-- Example schema of an API business (accounts, keys, logs, usage, generations,
-- invoices, support, chat). The shipped retention.toml is written against it.
-- Idempotent: drops and recreates the demo tables.
DROP TABLE IF EXISTS public.request_logs, public.api_interactions, public.api_usage,
  public.generations, public.invoices, public.support_tickets, public.conversations,
  public.sessions, public.api_keys, public.accounts CASCADE;

CREATE TABLE public.accounts (
  id            bigserial PRIMARY KEY,
  email         text NOT NULL UNIQUE,
  display_name  text,
  last_ip       inet,
  created_at    timestamptz NOT NULL DEFAULT now(),
  closed_at     timestamptz                      -- NULL while the account is active
);
CREATE INDEX accounts_closed_at_idx ON public.accounts (closed_at);

CREATE TABLE public.api_keys (
  id          bigserial PRIMARY KEY,
  account_id  bigint NOT NULL REFERENCES public.accounts(id),
  key_id      text NOT NULL UNIQUE,             -- public key id, e.g. kid_3f9a...
  key_hash    text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);

-- Request logs: method, path, status, latency, key id, IP, user agent. 30 days.
CREATE TABLE public.request_logs (
  id          bigserial PRIMARY KEY,
  api_key_id  text,
  method      text NOT NULL,
  path        text NOT NULL,
  status      int NOT NULL,
  latency_ms  int NOT NULL,
  ip          inet,
  user_agent  text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_logs_created_at_idx ON public.request_logs (created_at);

-- API interactions with message content. 90 days.
CREATE TABLE public.api_interactions (
  id             bigserial PRIMARY KEY,
  account_id     bigint NOT NULL,
  model          text NOT NULL,
  request_body   text,
  response_body  text,
  tokens_in      int,
  tokens_out     int,
  ip             inet,
  user_agent     text,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_interactions_created_at_idx ON public.api_interactions (created_at);

-- Usage metadata: counts and timing, kept for analytics; identifiers anonymised after 30 days.
CREATE TABLE public.api_usage (
  id          bigserial PRIMARY KEY,
  account_id  bigint,
  api_key_id  text,
  model       text NOT NULL,
  tokens_in   int NOT NULL,
  tokens_out  int NOT NULL,
  latency_ms  int NOT NULL,
  ip          inet,
  user_agent  text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_usage_created_at_idx ON public.api_usage (created_at);

-- Generated assets and uploaded inputs: rows point at object keys. 90 days.
CREATE TABLE public.generations (
  id          bigserial PRIMARY KEY,
  account_id  bigint NOT NULL,
  prompt      text,
  output_key  text,                 -- e.g. generated/<account>/<uuid>.png
  input_keys  text[] NOT NULL DEFAULT '{}',   -- e.g. uploads/<account>/<uuid>.jpg
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX generations_created_at_idx ON public.generations (created_at);

-- Payment / invoice metadata: seven years (Dutch tax law). Issue date is a date.
CREATE TABLE public.invoices (
  invoice_id    text PRIMARY KEY,
  account_id    bigint NOT NULL,
  amount_cents  bigint NOT NULL,
  currency      text NOT NULL DEFAULT 'EUR',
  issued_on     date NOT NULL
);
CREATE INDEX invoices_issued_on_idx ON public.invoices (issued_on);

-- Support communications: deleted a reasonable period after resolution.
CREATE TABLE public.support_tickets (
  id           bigserial PRIMARY KEY,
  account_id   bigint,
  email        text,
  subject      text,
  body         text,
  status       text NOT NULL DEFAULT 'open',   -- open | pending | resolved
  created_at   timestamptz NOT NULL DEFAULT now(),
  resolved_at  timestamptz
);
CREATE INDEX support_tickets_resolved_at_idx ON public.support_tickets (resolved_at);

-- Dashboard chat conversations; soft-deleted by the user (deleted_at), purged later.
CREATE TABLE public.conversations (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id  bigint NOT NULL,
  title       text,
  messages    jsonb NOT NULL DEFAULT '[]',
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);
CREATE INDEX conversations_deleted_at_idx ON public.conversations (deleted_at);

-- Security / device data: login sessions, start time in epoch milliseconds.
CREATE TABLE public.sessions (
  id          bigserial PRIMARY KEY,
  account_id  bigint NOT NULL,
  ip          inet,
  user_agent  text,
  started_ms  bigint NOT NULL
);
CREATE INDEX sessions_started_ms_idx ON public.sessions (started_ms);
