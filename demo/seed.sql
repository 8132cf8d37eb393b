-- Demo data for demo/schema.sql: a small API business with realistic spreads
-- of ages, so that `retentiond sweep --dry-run` has something due in every rule
-- and much that is not. Apply after schema.sql:
--
--   psql -v ON_ERROR_STOP=1 "$DATABASE_URL" -f demo/schema.sql -f demo/seed.sql
--
-- Plain SQL, built-in functions only (gen_random_uuid needs PostgreSQL 13+).
-- Idempotent: empties the demo tables first. Deterministic enough: setseed()
-- fixes random(); only the UUIDs and now() differ between runs.
-- All people, addresses and keys here are made up.

BEGIN;

TRUNCATE public.request_logs, public.api_interactions, public.api_usage,
  public.generations, public.invoices, public.support_tickets, public.conversations,
  public.sessions, public.api_keys, public.accounts RESTART IDENTITY CASCADE;

DO $$ BEGIN PERFORM setseed(0.42); END $$;

-- Pools of realistic values, picked from with random() below.
CREATE TEMP TABLE seed_pool ON COMMIT DROP AS SELECT
  ARRAY['Anna','Bram','Chloé','Daan','Emma','Finn','Greta','Hugo','Isa','Jens','Kofi','Lotte',
        'Mila','Noah','Olga','Pieter','Quinn','Ruth','Sven','Tess','Umar','Vera','Wout','Yara','Zoë',
        'José','Søren','Łucja','Mehmet','Priya','Wei','Aiko'] AS first_names,
  ARRAY['de Vries','Jansen','Bakker','Visser','Smit','Meijer','Mulder','de Boer','Bos','Vos',
        'Peters','Hendriks','Dekker','Brouwer','Müller','García','Kowalski','Nguyen','Okafor',
        'Schmidt','Rossi','Dubois','Andersson','Yılmaz','Tanaka','Singh'] AS last_names,
  ARRAY['gmail.com','outlook.com','proton.me','icloud.com','yahoo.com','posteo.de','hey.com',
        'kpn.nl','ziggo.nl','acme.io','studio-nord.nl','pixelforge.dev','example.org'] AS domains,
  ARRAY['curl/8.5.0','python-requests/2.32.3','python-httpx/0.27.2','node-fetch/3.3.2',
        'axios/1.7.7','Go-http-client/2.0','okhttp/4.12.0','kiara-python/1.4.2','kiara-js/2.1.0',
        'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
        'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
        'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
        'PostmanRuntime/7.40.0'] AS user_agents,
  ARRAY['kiara-image-1','kiara-image-1-turbo','kiara-video-0.9','llama-3.1-70b-instruct',
        'qwen2.5-72b-instruct','mistral-large-2','deepseek-v3','gemma-2-27b'] AS models,
  ARRAY['Write a short product description for','Summarise the following meeting notes about',
        'Translate into Dutch:','Explain like I am five:','Draft a polite reply to a customer asking about',
        'Generate three taglines for','List the pros and cons of','Fix the grammar in this paragraph about',
        'Write a SQL query that finds','Give me a haiku about'] AS prompt_openers,
  ARRAY['a solar-powered bike light','our Q3 roadmap','refund requests','vector databases',
        'a bakery in Utrecht','rate limiting','the new pricing page','container security',
        'a weekend in Lisbon','migrating from MySQL to PostgreSQL','a cat wearing sunglasses',
        'quarterly churn by plan'] AS topics,
  ARRAY['Sure! Here is a concise version:','Of course. Below are a few options:',
        'Here is a draft you can adapt:','Good question. In short:','Here you go:'] AS reply_openers,
  ARRAY['A watercolor fox in a misty forest','Isometric illustration of a tiny office',
        'Product photo of a ceramic mug on linen, soft light','Cyberpunk street at night, rain, neon',
        'Logo concept: a paper crane, flat, two colors','Portrait in the style of a 1970s film photo',
        'Sunset over the Wadden Sea, wide angle','Minimalist poster of a bicycle, Bauhaus'] AS image_prompts,
  ARRAY['Invoice missing VAT number','API returns 429 too often','Cannot log in with magic link',
        'Refund for unused credits','Question about data retention','Generation stuck in queue',
        'Change account email','Webhook signature mismatch','Request for a data export',
        'Billing address update'] AS ticket_subjects,
  ARRAY['/v1/images/generations','/v1/images/edits','/v1/chat/completions','/v1/models',
        '/v1/videos/generations','/v1/credits','/v1/keys','/v1/files'] AS paths;

-- A plausible public IPv4 address (never 0.x, 10.x, 127.x).
CREATE FUNCTION pg_temp.fake_ipv4() RETURNS inet LANGUAGE sql VOLATILE AS $$
  SELECT ((ARRAY[31,37,45,62,77,81,84,85,86,89,91,92,94,95,145,176,178,185,188,193,194,195,212,213,217])
            [1 + floor(random() * 25)::int]
          || '.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int
          || '.' || (1 + floor(random() * 254)::int))::inet
$$;
-- About one address in six is IPv6 (2a02:…/2001:1c00:… style, Dutch ISPs).
CREATE FUNCTION pg_temp.fake_ip() RETURNS inet LANGUAGE sql VOLATILE AS $$
  SELECT CASE WHEN random() < 0.17
    THEN ((ARRAY['2a02:a44','2001:1c00','2a02:a46','2a01:4f8','2a10:3781'])[1 + floor(random() * 5)::int]
          || ':' || to_hex(floor(random() * 65536)::int) || ':' || to_hex(floor(random() * 65536)::int)
          || '::' || to_hex(1 + floor(random() * 65535)::int))::inet
    ELSE pg_temp.fake_ipv4() END
$$;
CREATE FUNCTION pg_temp.pick(a text[]) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT a[1 + floor(random() * array_length(a, 1))::int]
$$;

-- 2,000 accounts created over nine years (more recent ones more common);
-- every 12th account (≈8%) is closed, closed_at spread over the last two years,
-- and ten of those closed within the last 30 days (not yet due for anonymising).
INSERT INTO public.accounts (email, display_name, last_ip, created_at, closed_at)
SELECT translate(lower(fn), 'éöëçøłıüíñ ', 'eoecoliuin.') || '.' || translate(lower(ln), 'éöëçøłıüíñ ', 'eoecoliuin.')
         || g || '@' || pg_temp.pick(p.domains),
       CASE WHEN random() < 0.85 THEN fn || ' ' || ln END,
       pg_temp.fake_ip(),
       -- A closed account was opened at least 30 days before it closed.
       CASE WHEN closed_at IS NULL THEN now() - power(random(), 1.5) * interval '9 years'
            ELSE closed_at - interval '30 days' - power(random(), 1.5) * interval '6 years' END,
       closed_at
FROM (
  SELECT g, pg_temp.pick(p.first_names) AS fn, pg_temp.pick(p.last_names) AS ln,
         CASE
           WHEN g % 12 = 0 AND g <= 120 THEN now() - interval '1 hour' - random() * interval '28 days'
           WHEN g % 12 = 0 THEN now() - interval '31 days' - random() * interval '700 days'
         END AS closed_at
  FROM generate_series(1, 2000) AS g, seed_pool p
) a, seed_pool p
ORDER BY g;

-- One or two API keys per account, some revoked.
INSERT INTO public.api_keys (account_id, key_id, key_hash, created_at, revoked_at)
SELECT a.id,
       'kid_' || substr(md5(a.id || ':' || n || ':' || random()), 1, 20),
       'sha256:' || md5(random()::text) || md5(random()::text),
       a.created_at + random() * (now() - a.created_at),
       CASE WHEN n = 2 AND random() < 0.4 THEN now() - random() * interval '300 days' END
FROM public.accounts a
-- (a.id in the condition keeps random() per account instead of once for all)
CROSS JOIN LATERAL generate_series(1, CASE WHEN a.id > 0 AND random() < 0.45 THEN 2 ELSE 1 END) AS n
ORDER BY a.id, n;

-- 50,000 request logs over the last 60 days (about half are older than 30 days).
INSERT INTO public.request_logs (api_key_id, method, path, status, latency_ms, ip, user_agent, created_at)
SELECT CASE WHEN random() < 0.97 THEN k.key_id END,
       CASE WHEN r < 0.55 THEN 'POST' WHEN r < 0.95 THEN 'GET' ELSE 'DELETE' END,
       pg_temp.pick(p.paths),
       CASE WHEN r2 < 0.90 THEN 200 WHEN r2 < 0.93 THEN 201 WHEN r2 < 0.95 THEN 400
            WHEN r2 < 0.96 THEN 401 WHEN r2 < 0.985 THEN 429 WHEN r2 < 0.995 THEN 500 ELSE 503 END,
       (20 + power(random(), 3) * 9000)::int,
       pg_temp.fake_ip(),
       pg_temp.pick(p.user_agents),
       now() - random() * interval '60 days'
FROM (SELECT g, random() AS r, random() AS r2, 1 + floor(random() * (SELECT count(*) FROM public.api_keys))::bigint AS kid
      FROM generate_series(1, 50000) AS g) s
JOIN public.api_keys k ON k.id = s.kid
CROSS JOIN seed_pool p
ORDER BY s.g;

-- 20,000 API interactions with message content over 180 days (≈half older than 90 days).
INSERT INTO public.api_interactions
  (account_id, model, request_body, response_body, tokens_in, tokens_out, ip, user_agent, created_at)
SELECT 1 + floor(random() * 2000)::bigint,
       pg_temp.pick(p.models),
       json_build_object('messages', json_build_array(json_build_object('role', 'user',
         'content', pg_temp.pick(p.prompt_openers) || ' ' || pg_temp.pick(p.topics) || '.')))::text,
       json_build_object('choices', json_build_array(json_build_object('message', json_build_object(
         'role', 'assistant', 'content', pg_temp.pick(p.reply_openers) || ' … ' || pg_temp.pick(p.topics)
           || ' (' || md5(random()::text) || ')'))))::text,
       (12 + random() * 1500)::int,
       (30 + random() * 900)::int,
       pg_temp.fake_ip(),
       pg_temp.pick(p.user_agents),
       now() - random() * interval '180 days'
FROM generate_series(1, 20000) AS g, seed_pool p
ORDER BY g;

-- 30,000 usage rows over 120 days (≈3/4 older than 30 days: identifiers to anonymise).
INSERT INTO public.api_usage
  (account_id, api_key_id, model, tokens_in, tokens_out, latency_ms, ip, user_agent, created_at)
SELECT k.account_id, k.key_id, pg_temp.pick(p.models),
       (12 + random() * 1500)::int, (30 + random() * 900)::int, (80 + power(random(), 2) * 20000)::int,
       pg_temp.fake_ip(), pg_temp.pick(p.user_agents),
       now() - random() * interval '120 days'
FROM (SELECT g, 1 + floor(random() * (SELECT count(*) FROM public.api_keys))::bigint AS kid
      FROM generate_series(1, 30000) AS g) s
JOIN public.api_keys k ON k.id = s.kid
CROSS JOIN seed_pool p
ORDER BY s.g;

-- 3,000 generations over 180 days: one output object and 0-2 uploaded inputs each
-- (demo/seed_objects.py puts those objects in the bucket). About 1% failed
-- without an output.
INSERT INTO public.generations (account_id, prompt, output_key, input_keys, created_at)
SELECT s.account_id,
       pg_temp.pick(p.image_prompts),
       CASE WHEN random() >= 0.01 THEN 'generated/' || s.account_id || '/' || gen_random_uuid() || '.png' END,
       ARRAY(SELECT 'uploads/' || s.account_id || '/' || gen_random_uuid() || '.jpg'
             FROM generate_series(1, s.n_inputs) WHERE s.n_inputs > 0),
       now() - random() * interval '180 days'
FROM (SELECT g, 1 + floor(random() * 2000)::bigint AS account_id,
             CASE WHEN random() < 0.5 THEN 0 WHEN random() < 0.6 THEN 1 ELSE 2 END AS n_inputs
      FROM generate_series(1, 3000) AS g) s
CROSS JOIN seed_pool p
ORDER BY s.g;

-- 6,000 invoices issued over nine years, most of them recent; ≈14% are older
-- than seven years (due), the rest must stay (Dutch tax law floor).
INSERT INTO public.invoices (invoice_id, account_id, amount_cents, currency, issued_on)
SELECT 'INV-' || to_char(i.issued_on, 'YYYY') || '-' || lpad(i.g::text, 6, '0'),
       i.account_id,
       (ARRAY[500, 1000, 2000, 2500, 5000, 10000, 25000])[1 + floor(random() * 7)::int] + floor(random() * 100)::int,
       CASE WHEN random() < 0.9 THEN 'EUR' ELSE 'USD' END,
       i.issued_on
FROM (SELECT g, 1 + floor(random() * 2000)::bigint AS account_id,
             current_date - floor(power(random(), 1.6) * 9 * 365.25)::int AS issued_on
      FROM generate_series(1, 6000) AS g) i
ORDER BY i.g;

-- 1,500 support tickets: 60% resolved (resolved_at over three years, recent
-- ones more common, so ≈35% of the table is due after one year, under the
-- rule's max_delete of 50%), the rest open or pending. Some come from people
-- without an account (email only).
INSERT INTO public.support_tickets (account_id, email, subject, body, status, created_at, resolved_at)
SELECT CASE WHEN s.r_acct < 0.9 THEN 1 + floor(random() * 2000)::bigint END,
       CASE WHEN s.r_acct >= 0.8 THEN 'customer' || s.g || '@' || pg_temp.pick(p.domains) END,
       s.subject,
       'Hi, ' || lower(s.subject) || '. Reference ' || upper(substr(md5(random()::text), 1, 8))
         || '. Thanks, ' || pg_temp.pick(p.first_names),
       s.status,
       CASE WHEN s.status = 'resolved' THEN s.resolved_at - random() * interval '10 days'
            ELSE now() - random() * interval '60 days' END,
       CASE WHEN s.status = 'resolved' THEN s.resolved_at END
FROM (SELECT g, random() AS r_acct, pg_temp.pick(p.ticket_subjects) AS subject,
             CASE WHEN g % 5 < 3 THEN 'resolved' WHEN g % 5 = 3 THEN 'open' ELSE 'pending' END AS status,
             now() - interval '1 hour' - power(random(), 1.3) * interval '3 years' AS resolved_at
      FROM generate_series(1, 1500) AS g, seed_pool p) s
CROSS JOIN seed_pool p
ORDER BY s.g;

-- 3,000 dashboard chat conversations; ≈30% soft-deleted by the user, deleted_at
-- spread over 120 days (so ≈3/4 of those are past the 30-day purge).
INSERT INTO public.conversations (account_id, title, messages, created_at, deleted_at)
SELECT c.account_id,
       initcap(c.topic),
       jsonb_build_array(
         jsonb_build_object('role', 'user', 'content', pg_temp.pick(p.prompt_openers) || ' ' || c.topic || '.'),
         jsonb_build_object('role', 'assistant', 'content', pg_temp.pick(p.reply_openers) || ' ' || md5(random()::text))),
       c.created_at,
       CASE WHEN c.deleted THEN greatest(c.created_at, now() - random() * interval '120 days') END
FROM (SELECT g, 1 + floor(random() * 2000)::bigint AS account_id, pg_temp.pick(p.topics) AS topic,
             now() - random() * interval '240 days' AS created_at, random() < 0.3 AS deleted
      FROM generate_series(1, 3000) AS g, seed_pool p) c
CROSS JOIN seed_pool p
ORDER BY c.g;

-- 10,000 login sessions over 60 days; start time in epoch milliseconds.
INSERT INTO public.sessions (account_id, ip, user_agent, started_ms)
SELECT 1 + floor(random() * 2000)::bigint,
       pg_temp.fake_ip(),
       pg_temp.pick(p.user_agents),
       floor(extract(epoch FROM now() - random() * interval '60 days') * 1000)::bigint
FROM generate_series(1, 10000) AS g, seed_pool p
ORDER BY g;

COMMIT;

ANALYZE public.accounts, public.api_keys, public.request_logs, public.api_interactions,
  public.api_usage, public.generations, public.invoices, public.support_tickets,
  public.conversations, public.sessions;
