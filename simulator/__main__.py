"""`python -m simulator`: run the local Twilio + SignalWire stand-in on 127.0.0.1:8010.

Point the SDKs at it with (these are the defaults; SIM_* variables or flags change them):
  TWILIO_ACCOUNT_SID=AC00000000000000000000000000000000  TWILIO_AUTH_TOKEN=sim-auth-token
  TWILIO_API_BASE_URL=http://127.0.0.1:8010
  SIGNALWIRE_PROJECT_ID=00000000-0000-4000-8000-000000000000  SIGNALWIRE_API_TOKEN=sim-token
  SIGNALWIRE_SPACE=127.0.0.1:8010  SIGNALWIRE_SIGNING_KEY=sim-signing-key
Test numbers (both providers): To +15005550001/2/3/4/9 and From +15005550001/7/8 are refused
(README: Test numbers); To +15005550011..14 are accepted and then fail delivery; any other number
is accepted.
Status callbacks: Twilio's start at sent (none for the initial queued, as Twilio does without a
Messaging Service); SignalWire's at queued.
A slow network in front of the provider: --ingress-delay-rate 0.2 holds a fifth of the sends
for --ingress-delay-min..--ingress-delay-max seconds before the provider sees them; each is then
taken (or refused) as usual even if its client gave up waiting meanwhile.
Faults can also be changed at run time: POST /_sim/config with a JSON object of the same names
(e.g. {"hang_rate": 1}); GET /_sim/messages lists accepted messages (with our message_id, segments,
ingress_delayed, validity_period) and how many sends are held (ingress_held); GET
/_sim/sends?from=NUMBER lists that number's accepted sends ({at: monotonic seconds, segments}), the
most segments in any one-second window, its pace and its pace refusals (without ?from=, every
number); POST /_sim/reset clears them, drops held sends and restores the start-up settings.
Texting back: POST /_sim/inbound {"from": "+1...", "to": OUR_NUMBER, "body": "STOP"} posts the
signed incoming-message webhook the provider would (Twilio's form; SignalWire's messaging webhook
JSON, or the compatibility form with --signalwire-callback-format form) to --inbound-url and
answers what it posted and the status the webhook got.
A sink for sms-outbox's own status webhooks: POST /_sim/webhooks/NAME records each one and
verifies its Standard Webhooks signature with --webhook-secrets' secret for NAME; GET
/_sim/webhooks lists them (?name=, ?type=, ?message_id=), with verified true, false or null.
A pace per sender: --enforce-mps '*=10,+15005550006=1:2' refuses (429, as the provider would) a
send that would put more than ceil(mps) + burst segments in its number's trailing second.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import uvicorn

from simulator.app import create_app
from simulator.config import ConfigError, SimConfig, from_env, setting_names

_HELP = {
    "twilio_account_sid": "Twilio account sid accepted (Basic auth user)",
    "twilio_auth_token": "Twilio auth token accepted; also signs Twilio callbacks",
    "signalwire_project": "SignalWire project id accepted (Basic auth user)",
    "signalwire_token": "SignalWire API token accepted",
    "signalwire_signing_key": "key that signs SignalWire callbacks",
    "callbacks": "send status callbacks at all (true/false)",
    "callback_delay": "seconds between queued -> sent -> delivered callbacks",
    "callback_extra_delay": "seconds added before a message's first callback",
    "callback_drop_rate": "probability a callback is never sent",
    "callback_duplicate_rate": "probability a callback is sent twice",
    "callback_reorder_rate": "probability a message's callbacks arrive newest first",
    "signalwire_callback_format": "json (native API) or form (compatibility API)",
    "delivery_failures": 'JSON {"+1...": ["undelivered", "30003"]}: recipients that fail delivery',
    "inbound_url": (
        "where POST /_sim/inbound posts a text to our number, as its incoming-message webhook"
        " ({provider} becomes twilio or signalwire)"
    ),
    "inbound_urls": 'JSON {"+1...": "https://..."}: inbound_url per number of ours',
    "webhook_secrets": (
        'JSON {"NAME": "whsec_..."}: verify what POST /_sim/webhooks/NAME receives with it'
    ),
    "webhook_sink_status": "the status POST /_sim/webhooks/NAME answers (410: disable me)",
    "latency": "seconds added to every API request",
    "jitter": "up to this many seconds more, at random",
    "error_rate": "probability a send is refused with one of --error-codes",
    "error_codes": "comma-separated provider codes for --error-rate (500/503/429 = HTTP status)",
    "rate_limit_rate": "probability a send gets 429 with Retry-After",
    "retry_after": "Retry-After seconds on 429s",
    "server_error_rate": "probability a send gets --server-error-status",
    "server_error_status": "500 or 503",
    "hang_rate": "probability a send is accepted and then never answered",
    "hang_max": "seconds a hung request is held at most",
    "ingress_delay_rate": "probability a send is held before the provider sees it (slow path)",
    "ingress_delay_min": "seconds a held send waits at least",
    "ingress_delay_max": "seconds a held send waits at most (uniform between min and max)",
    "enforce_mps": (
        "per-sender pace in segments: NUMBER=MPS[:BURST],... ('*' = every other number) or JSON;"
        " a send that would put more than ceil(mps)+burst segments in the trailing second of its"
        " from number gets the provider's 429 (burst default max(1, ceil(mps)))"
    ),
    "outage": "answer 503 to everything (true/false)",
    "outage_windows": "503 during these windows, seconds after start: 10-20,45-50",
    "seed": "random seed for repeatable faults",
}


def parse_args(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[argparse.Namespace, SimConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=environ.get("SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(environ.get("SIM_PORT", "8010")))
    parser.add_argument("--log-level", default=environ.get("SIM_LOG_LEVEL", "warning"))
    defaults = SimConfig()
    for name in setting_names():
        secret = "token" in name or "key" in name or "secret" in name
        shown = "(hidden)" if secret else getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{_HELP.get(name, name)} [env SIM_{name.upper()}; default {shown}]",
        )
    args = parser.parse_args(argv)
    config = SimConfig()
    try:
        config.update(from_env(environ))
        config.update(
            {n: getattr(args, n) for n in setting_names() if getattr(args, n) is not None}
        )
    except ConfigError as e:
        parser.error(str(e))
    return args, config


def main(argv: Sequence[str] | None = None) -> None:
    args, config = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
