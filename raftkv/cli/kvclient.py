#!/usr/bin/env python3
"""kvclient: one-shot commands against the cluster, or a REPL when run with no command.

    kvclient [--servers HOST:PORT,...] [--timeout SECONDS] [--json] COMMAND [ARGS]
    kvclient put KEY - < value.bin            # the value from stdin
    kvclient put KEY --file value.bin         # the value from a file (any size the cluster takes)

Exit status: 0 done; 1 key not found or CAS did not match; 2 usage or input error;
3 cluster unavailable (no leader, timeout, no reachable server, or an unexpected server error);
4 not authorized (a secure cluster: no token, an unknown or revoked one, or a role without the right).
Errors go to stderr as one line (a JSON object {"error", "code"} with --json). A REPL reading
a pipe (not a terminal) exits with the status of its last failed command, 0 if none failed.

--json output: get prints {"key", "value"} with the key's "create_revision", "mod_revision",
"version" and the "revision" the read reflects; list prints a list of {"key", "value"}; a value that is not
valid UTF-8 is base64-encoded and the object carries "value_b64": true (absent otherwise).
Writes print {"ok": true}; status and members print the server's JSON; admin commands print
{"ok": true, "info": ..., "node": ID, "node_state": STATE} (the node that did it).
Without --json, writes print nothing on success; admin commands say which node did what; null,
true and false are spelled as in JSON and durations carry their unit (last_contact=0.041s).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import click

from raftkv import __version__
from raftkv.cli.render import STATUS_ORDER, member_line, status_text  # noqa: F401 (re-exported)
from raftkv.cli.txn_script import ScriptError, parse_script
from raftkv.wire.client import (
    Client, ClientError, InvalidRequest, NotAuthorized, NotFound, Refused, Unavailable, json_item,
)

DEFAULT_SERVERS = "127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003"
DEFAULT_TIMEOUT = 5.0
HISTORY = Path("~/.kvclient_history").expanduser()

EXIT_MISS, EXIT_INPUT, EXIT_UNAVAILABLE, EXIT_NOT_AUTHORIZED = 1, 2, 3, 4
NOT_AUTHORIZED = "not authorized"


class Failure(click.ClickException):
    """A failed command: one line on stderr and a specific exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; ours is per failure


class State:
    """Settings of the invocation (or of the REPL) and its lazily-made Client."""

    def __init__(self) -> None:
        self.servers: Optional[str] = None
        self.timeout: float = DEFAULT_TIMEOUT
        self.json = False
        self.repl_json = False  # --json given when the REPL started: the default of every line
        self.in_repl = False
        self.token: Optional[str] = None  # --token or $KV_TOKEN; a REPL keeps it for every line
        self._client: Optional[Client] = None

    def client(self) -> Client:
        if self._client is None:
            try:
                self._client = Client(self.servers or default_servers(), timeout=self.timeout, token=self.token)
            except InvalidRequest as e:
                raise Failure(str(e), EXIT_INPUT) from None
            except (NotAuthorized, ValueError) as e:  # a damaged or wrong-kind token (TokenError)
                raise not_authorized(e) from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def default_servers() -> str:
    """KV_SERVERS, else the client addresses of configs/cluster.yaml in the current
    directory (a checkout), else the local 3-node defaults."""
    env = os.environ.get("KV_SERVERS", "").strip()
    if env:
        return env
    for base in (Path.cwd(),):
        path = base / "configs" / "cluster.yaml"
        if not path.is_file():
            continue
        try:
            import yaml  # only needed here: keep the common path's start-up short

            nodes = (yaml.safe_load(path.read_text()) or {}).get("nodes") or []
            clients = [str(n["client"]) for n in nodes if isinstance(n, dict) and n.get("client")]
        except Exception:  # an unreadable file: fall back, the servers may still answer
            continue
        if clients:
            return ",".join(clients)
    return DEFAULT_SERVERS


# ------------------------------------------------------------------ output


def write_out(data: Any) -> None:
    """Write text or bytes to stdout and flush (the REPL interleaves with stderr)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def emit_json(obj: Any) -> None:
    write_out(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def state_of(ctx: click.Context) -> State:
    return ctx.ensure_object(State)


def not_authorized(e: Exception) -> Failure:
    """Exit status 4 with one line that starts "not authorized: " (whatever part said it)."""
    text = str(e)
    if not text.startswith(NOT_AUTHORIZED):
        text = f"{NOT_AUTHORIZED}: {text}"
    return Failure(text, EXIT_NOT_AUTHORIZED)


def run(ctx: click.Context, fn: Callable[[Client], Any]) -> Any:
    """Call the library, turning its exceptions into exit statuses."""
    try:
        return fn(state_of(ctx).client())
    except NotAuthorized as e:
        raise not_authorized(e) from None
    except (NotFound, Refused) as e:
        raise Failure(str(e), EXIT_MISS) from None
    except InvalidRequest as e:
        raise Failure(str(e), EXIT_INPUT) from None
    except Unavailable as e:
        raise Failure(str(e), EXIT_UNAVAILABLE) from None
    except ClientError as e:
        raise Failure(str(e), EXIT_UNAVAILABLE) from None


def write_done(ctx: click.Context) -> None:
    if state_of(ctx).json:
        emit_json({"ok": True})


def json_flag(f: Callable) -> Callable:
    """--json after the command name: the same as before it."""

    def set_json(ctx: click.Context, _param: Any, value: bool) -> None:
        if value:
            state_of(ctx).json = True

    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=set_json,
                        help="Print JSON.")(f)


# ------------------------------------------------------------------ commands

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="kvclient", message="%(prog)s %(version)s")
@click.option("--servers", metavar="HOST:PORT,...", help="Client addresses of cluster nodes "
              "[default: $KV_SERVERS, else configs/cluster.yaml, else 127.0.0.1:5001-5003].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help=f"Deadline of one command, retries included [default: {DEFAULT_TIMEOUT:g}].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--token", metavar="TOKEN", envvar="KV_TOKEN", show_envvar=True,
              help="Client token of a secure cluster (kvt1_...) [default: $KV_TOKEN].")
@click.pass_context
def cli(ctx: click.Context, servers: Optional[str], timeout: Optional[float], as_json: bool,
        token: Optional[str]) -> None:
    """Talk to a Raft key-value cluster. With no command, start an interactive REPL."""
    state = state_of(ctx)
    if state.in_repl:
        # One line of the REPL: the connection is already set up; --json may vary per line.
        state.json = state.repl_json or as_json
        if servers or timeout or (token and token.strip() != state.token):
            raise click.UsageError("--servers, --timeout and --token are set when the REPL starts")
        return
    state.servers = servers
    state.timeout = timeout or DEFAULT_TIMEOUT
    state.token = token.strip() if token and token.strip() else None
    state.json = as_json
    ctx.call_on_close(state.close)
    if ctx.invoked_subcommand is None:
        ctx.exit(repl(state))


@cli.command()
@click.argument("key")
@click.option("--stale", is_flag=True, help="Read the local copy of any node (may be behind).")
@click.option("--consistency", type=click.Choice(["linearizable", "lease", "stale"]),
              help="Read consistency [default: linearizable].")
@json_flag
@click.pass_context
def get(ctx: click.Context, key: str, stale: bool, consistency: Optional[str]) -> None:
    """Print the value of KEY (raw bytes and a newline)."""
    level = "stale" if stale else (consistency or "linearizable")
    if state_of(ctx).json:  # with the key's revisions and the read's (issue 14)
        emit_json(run(ctx, lambda kv: kv.get_meta(key, consistency=level)).as_json())
        return
    value = run(ctx, lambda kv: kv.get(key, consistency=level))
    write_out(value + b"\n")


STDIN_VALUE = "-"


def read_value(ctx: click.Context, value: Optional[str], path: Optional[str]) -> Union[str, bytes]:
    """The value of a write: VALUE itself, stdin for "-", or the bytes of --file PATH.

    Stdin and files carry raw bytes, so any value the cluster accepts (binary, 1 MB) can be
    written without passing through the argument list.
    """
    if (value is None) == (path is None):
        raise click.UsageError("give either VALUE (- for stdin) or --file PATH", ctx=ctx)
    if path is not None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise Failure(f"cannot read {path}: {e.strerror or e}", EXIT_INPUT) from None
    if value == STDIN_VALUE:
        if state_of(ctx).in_repl:
            # The REPL's stdin is its own command stream (or the terminal).
            raise Failure("in the REPL, give the value inline or with --file PATH (- reads stdin)", EXIT_INPUT)
        return sys.stdin.buffer.read()
    return value


@cli.command()
@click.argument("key")
@click.argument("value", required=False)
@click.option("--file", "path", metavar="PATH", help="Read the value from this file (raw bytes).")
@click.option("--lease", "lease_id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="Attach KEY to lease ID (deleted when the lease ends).")
@json_flag
@click.pass_context
def put(ctx: click.Context, key: str, value: Optional[str], path: Optional[str], lease_id: Optional[int]) -> None:
    """Set KEY to VALUE ("-": read the value from stdin; or --file PATH)."""
    data = read_value(ctx, value, path)
    run(ctx, lambda kv: kv.put(key, data, lease=lease_id or 0))
    write_done(ctx)


@cli.command()
@click.argument("key")
@click.option("--if-value", "if_value", metavar="VALUE", help="Delete only if KEY holds VALUE (exit 1 if not).")
@json_flag
@click.pass_context
def delete(ctx: click.Context, key: str, if_value: Optional[str]) -> None:
    """Delete KEY."""
    if not run(ctx, lambda kv: kv.delete(key, expected=if_value)):
        raise Failure(f"compare failed: {key} does not hold the expected value", EXIT_MISS)
    write_done(ctx)


@cli.command()
@click.argument("key")
@click.argument("expected")
@click.argument("new")
@json_flag
@click.pass_context
def cas(ctx: click.Context, key: str, expected: str, new: str) -> None:
    """Set KEY to NEW only if its value is EXPECTED (exit 1 if not)."""
    if not run(ctx, lambda kv: kv.cas(key, expected, new)):
        raise Failure(f"compare failed: {key} does not hold the expected value", EXIT_MISS)
    write_done(ctx)


@cli.command()
@click.argument("key")
@click.argument("value")
@json_flag
@click.pass_context
def create(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY to VALUE only if KEY is absent (exit 1 if it exists)."""
    if not run(ctx, lambda kv: kv.create(key, value)):
        raise Failure(f"compare failed: {key} already exists", EXIT_MISS)
    write_done(ctx)


@cli.command("list")
@click.argument("prefix", default="")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most N keys (0: all).")
@json_flag
@click.pass_context
def list_cmd(ctx: click.Context, prefix: str, limit: int) -> None:
    """Print the keys starting with PREFIX and their values, one "KEY<TAB>VALUE" a line."""
    items = run(ctx, lambda kv: kv.list(prefix, limit))
    if state_of(ctx).json:
        emit_json([json_item(k, v) for k, v in items])
    else:
        write_out(b"".join(k.encode() + b"\t" + v + b"\n" for k, v in items))


@cli.command()
@json_flag
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show the status of the first reachable server of --servers (not the leader's)."""
    st = run(ctx, lambda kv: kv.status())
    if state_of(ctx).json:
        emit_json(st)
        return
    write_out(status_text(st))


@cli.command()
@json_flag
@click.pass_context
def members(ctx: click.Context) -> None:
    """List the cluster's members as the leader sees them."""
    ms = run(ctx, lambda kv: kv.members())
    if state_of(ctx).json:
        emit_json(ms)
    else:
        write_out("".join(member_line(m) + "\n" for m in ms if isinstance(m, dict)))


@dataclass
class Responder:
    """The node that carried out an admin command, as it describes itself."""

    id: str
    state: Optional[str]  # leader | follower | candidate; None when it could not be asked
    leader_id: Optional[str]


def responder(ctx: click.Context) -> Responder:
    """Who answered the last call: the Client follows redirects and remembers the address that
    answered; that node's own status names it (replies to admin commands do not)."""
    kv = state_of(ctx).client()
    addr = kv.leader or "?"
    try:
        st = kv.status(addr)
    except ClientError:
        return Responder(addr, None, None)  # it answered, then went away: name it by address
    return Responder(str(st.get("id") or addr), st.get("state"), st.get("leader_id"))


def admin_done(ctx: click.Context, info: Any, who: Responder, text: str) -> None:
    """Print ``text`` (what was done, naming ``who`` did it), or the JSON of it."""
    if state_of(ctx).json:
        emit_json({"ok": True, "info": info, "node": who.id, "node_state": who.state})
    else:
        write_out(text + "\n")


def entry_note(info: Any) -> str:
    """The log index of a membership change, when the server gave it."""
    return f" (configuration entry {info['index']})" if isinstance(info, dict) and "index" in info else ""


@cli.command("add-node")
@click.argument("id")
@click.argument("addr")
@click.option("--client", "client_addr", default="", metavar="HOST:PORT", help="Its client address.")
@click.option("--http", "http_addr", default="", metavar="HOST:PORT", help="Its HTTP address.")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner.")
@json_flag
@click.pass_context
def add_node(ctx: click.Context, id: str, addr: str, client_addr: str, http_addr: str, learner: bool) -> None:
    """Add node ID whose peer (Raft) address is ADDR."""
    info = run(ctx, lambda kv: kv.add_node(id, addr, client=client_addr, http=http_addr, voter=not learner))
    who = responder(ctx)
    kind = "learner" if learner else "voter"
    admin_done(ctx, info, who, f"{id} added as a {kind} by {who.id}{entry_note(info)}")


@cli.command("remove-node")
@click.argument("id")
@json_flag
@click.pass_context
def remove_node(ctx: click.Context, id: str) -> None:
    """Remove node ID from the cluster."""
    info = run(ctx, lambda kv: kv.remove_node(id))
    who = responder(ctx)
    admin_done(ctx, info, who, f"{id} removed by {who.id}{entry_note(info)}")


@cli.command("transfer-leader")
@click.argument("id", required=False)
@json_flag
@click.pass_context
def transfer_leader(ctx: click.Context, id: Optional[str]) -> None:
    """Hand leadership to node ID (or to the most up-to-date follower)."""
    info = run(ctx, lambda kv: kv.transfer_leader(id))
    target = info.get("target") if isinstance(info, dict) else None
    who = responder(ctx)
    admin_done(ctx, info, who, f"{who.id} is handing leadership to {target or id or 'the most up-to-date follower'}")


@cli.command()
@json_flag
@click.pass_context
def snapshot(ctx: click.Context) -> None:
    """Take a snapshot now on the node that answers, and say which node that was (a
    follower snapshots its own copy: give --servers the leader's address for the leader's)."""
    info = run(ctx, lambda kv: kv.snapshot())
    who = responder(ctx)
    at = (f" at index {info.get('index')} (term {info.get('term')})"
          if isinstance(info, dict) and "index" in info else "")
    if who.state == "leader":
        text = f"{who.id} (the leader) took a snapshot{at}"
    elif who.leader_id:
        text = f"{who.id} (a follower of {who.leader_id}) took a snapshot of its own copy{at}"
    elif who.state is None:
        text = f"{who.id} took a snapshot{at}"
    else:
        # Without a leader the node cannot know how far behind it is: this is not the
        # cluster's snapshot, and a script must not take it for one.
        raise Failure(f"{who.id} knows no leader (no quorum?): it took a snapshot of its own copy{at}, "
                      "which may be behind the cluster", EXIT_UNAVAILABLE)
    admin_done(ctx, info, who, text)


@cli.command()
@click.argument("prefix")
@click.option("--rev", type=click.IntRange(min=1), default=None, metavar="N",
              help="Start at revision N (inclusive) [default: now, after every write acknowledged before].")
@json_flag
@click.pass_context
def watch(ctx: click.Context, prefix: str, rev: Optional[int]) -> None:
    """Print every change of the keys starting with PREFIX, one line each, until Ctrl-C.

    A line is REVISION TYPE KEY [VALUE] (a value that is not UTF-8 as base64:..., newlines as \\n);
    --json prints one JSON object per line. Resumes on another node if one fails, without a gap."""
    from raftkv.wire.watch_client import event_json

    as_json = state_of(ctx).json
    try:
        w = run(ctx, lambda kv: kv.watch(prefix, rev))
        with w:
            while True:
                got = run(ctx, lambda _kv: w.poll())
                for ev in got:
                    if as_json:
                        emit_json(event_json(ev))
                    else:
                        write_out(event_line(ev))
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends: exit 0


def event_line(ev: Any) -> str:
    """One event as a line of text: REVISION TYPE KEY [VALUE]."""
    parts = [str(ev.revision), ev.type, ev.key]
    if ev.value is not None:
        try:
            text = ev.value.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            text = "base64:" + base64.b64encode(ev.value).decode("ascii")
        parts.append(text.replace("\\", "\\\\").replace("\n", "\\n"))
    return " ".join(parts) + "\n"


@cli.group(context_settings=CONTEXT)
def token() -> None:
    """Client tokens of a secure cluster (admin): create, list, revoke."""


ROLES = ("read", "write", "admin")


@token.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="read: get, list, status, members; write: + put, delete, cas, create; admin: everything.")
@click.option("--name", required=True, help="The token's name (1-64 of A-Z a-z 0-9 . _ -), unique in the cluster.")
@json_flag
@click.pass_context
def token_create(ctx: click.Context, role: str, name: str) -> None:
    """Make a new token and print it as the last word (shown once: the cluster keeps only a hash).

    The token is made here, from your own admin token (which carries the cluster's id and key):
    its secret never travels to a node."""
    if state_of(ctx).token is None:
        raise Failure("token create needs your admin token (--token or $KV_TOKEN): the new token is made "
                      "from the cluster id and key it carries", EXIT_INPUT)
    text = run(ctx, lambda kv: kv.token_create(name, role))
    if state_of(ctx).json:
        emit_json({"ok": True, "name": name, "role": role, "token": text})
    else:
        write_out(f"created {role} token {name!r} (keep it secret; it is not shown again): {text}\n")


@token.command("list")
@json_flag
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """List the tokens: one "NAME<TAB>ROLE" a line (never a secret or hash)."""
    items = run(ctx, lambda kv: kv.token_list())
    if state_of(ctx).json:
        emit_json(items)
    else:
        write_out("".join(f"{t['name']}\t{t['role']}\n" for t in items))


@token.command("revoke")
@click.argument("name")
@json_flag
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke token NAME: refused on every node once the revocation is committed."""
    run(ctx, lambda kv: kv.token_revoke(name))
    if state_of(ctx).json:
        emit_json({"ok": True, "name": name})
    else:
        write_out(f"revoked token {name!r}\n")


# ------------------------------------------------------------------ errors and entry point


def report(e: click.ClickException, state: State) -> None:
    """One line on stderr for any failure."""
    message = e.format_message().replace("\n", " ")
    if isinstance(e, click.UsageError) and e.ctx is not None:
        if state.in_repl:
            name = e.ctx.info_name if e.ctx.parent is not None else ""
            message += f" (see 'help{' ' + name if name else ''}')"
        else:
            message += f" (see '{e.ctx.command_path} --help')"
    if state.json:
        line = json.dumps({"error": message, "code": e.exit_code}, ensure_ascii=False)
    else:
        line = f"kvclient: {message}"
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)


def invoke(args: list[str], state: State) -> int:
    """Run one command line with click, never exiting; returns the exit status."""
    try:
        rv = cli.main(args=args, prog_name="kvclient", standalone_mode=False, obj=state)
    except click.ClickException as e:
        report(e, state)
        return e.exit_code
    except click.Abort:
        print("kvclient: interrupted", file=sys.stderr, flush=True)
        return 130
    return rv if isinstance(rv, int) else 0


# ------------------------------------------------------------------ the REPL

REPL_WORDS = ["exit", "quit", "help"]


def repl_help() -> str:
    lines = ["commands (same as on the command line; --json per line):"]
    for name in sorted(cli.commands):
        cmd = cli.commands[name]
        lines.append(f"  {name:<16} {cmd.get_short_help_str(60)}")
    lines += ["  help [COMMAND]   this list, or the options of COMMAND", "  exit, quit       leave (or EOF)"]
    return "\n".join(lines) + "\n"


def setup_readline() -> Optional[Any]:
    """History in ~/.kvclient_history and tab completion of command names (tty only)."""
    try:
        import readline
    except ImportError:  # not on every platform: the REPL still works without it
        return None
    words = sorted(list(cli.commands) + REPL_WORDS)

    def complete(text: str, i: int) -> Optional[str]:
        if readline.get_line_buffer()[: readline.get_begidx()].strip():
            return None  # only the first word is a command name
        matches = [w + " " for w in words if w.startswith(text)]
        return matches[i] if i < len(matches) else None

    readline.set_completer(complete)
    readline.set_completer_delims(" \t")
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    try:
        readline.read_history_file(HISTORY)
    except OSError:
        pass  # no history yet
    readline.set_history_length(1000)
    return readline


def repl(state: State) -> int:
    """Read commands until exit/quit/EOF; an error ends that line only.

    Returns 0 at a terminal; reading a pipe (a script), the status of the last line that
    failed (0 if none did), so ``kvclient < script`` fails as its one-shot commands would.
    """
    interactive = sys.stdin.isatty()
    readline = setup_readline() if interactive else None
    state.in_repl = True
    state.repl_json = state.json
    last_failure = 0
    try:
        while True:
            try:
                line = input("kv> ") if interactive else sys.stdin.readline()
            except EOFError:
                break
            except KeyboardInterrupt:
                print(file=sys.stderr)
                continue
            if not interactive and line == "":
                break  # EOF of a pipe
            try:
                words = shlex.split(line)
            except ValueError as e:
                print(f"kvclient: {e}", file=sys.stderr, flush=True)
                last_failure = EXIT_INPUT
                continue
            if not words:
                continue
            if words[0] in ("exit", "quit"):
                break
            if words[0] == "help":
                if len(words) > 1:
                    code = invoke([words[1], "--help"], state)
                else:
                    write_out(repl_help())
                    code = 0
            else:
                code = invoke(words, state)
            if code != 0:
                last_failure = code
    finally:
        state.in_repl = False
        if readline is not None:
            try:
                readline.write_history_file(HISTORY)
            except OSError:
                pass  # a read-only home should not break the REPL's exit
    if interactive:
        print(file=sys.stderr)
        return 0
    return last_failure


def main(argv: Optional[list[str]] = None) -> int:
    state = State()
    try:
        code = invoke(sys.argv[1:] if argv is None else argv, state)
    except BrokenPipeError:
        # the reader went away (kvclient list | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    finally:
        state.close()
    return code


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@json_flag
@click.pass_context
def backup(ctx: click.Context, file: str) -> None:
    """Save a consistent copy of the whole state (at one applied index, from the leader) to
    FILE; restore it with 'kvnode restore FILE --id ID --data-dir DIR'."""
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not sys.stderr.isatty():
            return
        if bar is None:
            bar = click.progressbar(length=total, label="backup", file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        info = run(ctx, lambda kv: kv.backup(file, progress=progress))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if state_of(ctx).json:
        emit_json({"ok": True, **info})
    else:
        n = info["members"]
        write_out(f"saved the state of cluster {info['cluster_id']} at index {info['index']} (term {info['term']}, "
                  f"{n} member{'' if n == 1 else 's'}) from {info['node']}: {info['bytes']} bytes in {info['path']}\n")


@cli.command()
@json_flag
@click.pass_context
def txn(ctx: click.Context) -> None:
    """Apply a transaction read from stdin (etcdctl's syntax): compares, a blank line, the
    success ops, a blank line, the failure ops. Prints SUCCESS or FAILURE, then one line per
    op of the branch that ran (a get: key and value; a put: OK; a delete: 1 or 0)."""
    if state_of(ctx).in_repl:
        raise Failure("txn reads its script from stdin: run it outside the REPL", EXIT_INPUT)
    try:
        t = parse_script(sys.stdin.read())
    except ScriptError as e:
        raise Failure(str(e), EXIT_INPUT) from None
    res = run(ctx, lambda kv: kv.txn(t.compare, t.success, t.failure))
    if state_of(ctx).json:
        out = []
        for r in res.responses:
            d = {"type": r.type, "key": r.key, "found": r.found}
            if r.type == "get" and r.found:
                d.update(json_item(r.key, r.value))
            if r.found and r.type != "delete":
                d.update(create_revision=r.create_revision, mod_revision=r.mod_revision, version=r.version)
            out.append(d)
        emit_json({"succeeded": res.succeeded, "revision": res.revision, "responses": out})
        return
    lines = [b"SUCCESS" if res.succeeded else b"FAILURE"]
    for r in res.responses:
        if r.type == "get":
            if r.found:
                lines += [r.key.encode(), r.value or b""]
        elif r.type == "put":
            lines.append(b"OK")
        else:
            lines.append(b"1" if r.found else b"0")
    write_out(b"\n".join(lines) + b"\n")


# ------------------------------------------------------------------ leases (issue 14)


@cli.group()
def lease() -> None:
    """Leases: keys that disappear when their lease expires or is revoked."""


_LEASE_ID = click.argument("lease_id", metavar="ID", type=click.IntRange(min=1))


def _lease_command(name: str, argument: Optional[Callable] = _LEASE_ID) -> Callable:
    """Register a ``lease NAME [ARGUMENT] [--json]`` subcommand (the context passed first)."""
    def register(f: Callable) -> Callable:
        f = json_flag(click.pass_context(f))
        return lease.command(name)(argument(f) if argument is not None else f)
    return register


def _lease_reply(ctx: click.Context, call: Callable, as_json: Callable[[Any], Any],
                 as_text: Callable[[Any], str]) -> None:
    """Make ``call(kv)`` and print what it returned: ``as_json(result)`` as JSON with --json,
    else ``as_text(result)``."""
    res = run(ctx, call)
    if state_of(ctx).json:
        emit_json(as_json(res))
    else:
        write_out(as_text(res))


@_lease_command("grant", click.argument("ttl", type=click.IntRange(min=1)))
def lease_grant(ctx: click.Context, ttl: int) -> None:
    """Grant a lease of TTL seconds; prints its id (the last word). Keep it alive with
    'lease keepalive ID' more often than every TTL seconds."""
    _lease_reply(ctx, lambda kv: kv.lease_grant(ttl), lambda lid: {"id": lid, "ttl": ttl},
                 lambda lid: f"lease granted with TTL {ttl}s: {lid}\n")


@_lease_command("keepalive")
def lease_keepalive(ctx: click.Context, lease_id: int) -> None:
    """Renew lease ID once, for its full TTL from now (exit 1 if it is gone)."""
    _lease_reply(ctx, lambda kv: kv.lease_keepalive(lease_id), lambda ttl: {"id": lease_id, "ttl": ttl},
                 lambda ttl: f"lease {lease_id} kept alive for {ttl}s\n")


@_lease_command("revoke")
def lease_revoke(ctx: click.Context, lease_id: int) -> None:
    """Revoke lease ID now: its keys are deleted (exit 1 if it is gone)."""
    run(ctx, lambda kv: kv.lease_revoke(lease_id))
    write_done(ctx)


def _lease_ttl_text(lease_id: int, info: dict) -> str:
    keys = info.get("keys") or []
    return (f"lease {lease_id}: ttl={info.get('ttl')}s remaining={info.get('remaining')}s "
            f"keys={len(keys)}\n" + "".join(f"  {k}\n" for k in keys))


@_lease_command("ttl")
def lease_ttl(ctx: click.Context, lease_id: int) -> None:
    """Remaining seconds of lease ID and its keys (exit 1 if it is gone)."""
    _lease_reply(ctx, lambda kv: kv.lease_ttl(lease_id), lambda info: info,
                 lambda info: _lease_ttl_text(lease_id, info))


@_lease_command("list", None)
def lease_list(ctx: click.Context) -> None:
    """Every lease, with its TTL and remaining seconds."""
    _lease_reply(ctx, lambda kv: kv.lease_list(), lambda leases: leases,
                 lambda leases: "".join(f"{x.get('id')} ttl={x.get('ttl')}s remaining={x.get('remaining')}s\n"
                                        for x in leases))


@cli.group("join-token", context_settings=CONTEXT)
def join_token() -> None:
    """The join token of a secure cluster (admin): rotate it."""


@join_token.command("rotate")
@json_flag
@click.pass_context
def join_token_rotate(ctx: click.Context) -> None:
    """Make a new join token and print it as the last word (shown once: the cluster keeps only a
    hash). Once committed, the old join token is refused (kvnode --join exits 1); members
    already in are not affected. Use the printed token: join.token files still holding the old
    one are renamed to join.token.rotated by their nodes."""
    if state_of(ctx).token is None:
        raise Failure("join-token rotate needs your admin token (--token or $KV_TOKEN): the new token is made "
                      "from the cluster id and key it carries", EXIT_INPUT)
    text = run(ctx, lambda kv: kv.join_token_rotate())
    if state_of(ctx).json:
        emit_json({"ok": True, "token": text})
    else:
        write_out(f"rotated the join token; the old one is refused from now on. New join token (keep it secret; "
                  f"give it to kvnode --join ADDR --token): {text}\n")

if __name__ == "__main__":
    sys.exit(main())
