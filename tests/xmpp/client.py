"""A real XMPP user for the tests: a slixmpp client driven line by line.

Usage: client.py JID PASSWORD HOST PORT [noack]

With `noack`, receipts asked for are not sent (a user agent that never confirms).

It logs in (plain c2s on loopback; the tests prove the server-to-server side, not c2s),
sends its initial presence, prints `ready`, then obeys commands read from stdin, one per
line, fields separated by tabs:

  msg TO TEXT [receipt]   a chat message (asking for a XEP-0184 receipt); prints `sent ID`
  sub TO                  a presence subscription request
  unsub TO                ends a subscription
  pres SHOW STATUS        its presence (SHOW: '', away, dnd, xa, chat, unavailable)
  quit

and prints what it receives, one event per line, tab-separated:

  message FROM BODY
  receipt FROM ID         a receipt for one of its messages
  presence FROM TYPE SHOW STATUS
  subscribe FROM          (approved at once with `subscribed`)
  error FROM CONDITION    a stanza error
"""

import asyncio
import sys

import slixmpp


def out(*fields):
    print("\t".join(str(f) for f in fields), flush=True)


class User(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ack=True):
        super().__init__(jid, password)
        self.enable_plaintext = True
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.register_plugin("xep_0184")  # receipts: answered automatically (unless noack)
        self.plugin["xep_0184"].auto_ack = ack
        self.register_plugin("xep_0199")  # ping
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.auto_authorize = True
        self.auto_subscribe = False
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message)
        self.add_event_handler("receipt_received", self.on_receipt)
        self.add_event_handler("presence", self.on_presence)
        self.add_event_handler("failed_auth", lambda _: (out("auth-failed"), sys.exit(2)))

    async def started(self, _):
        self.send_presence()
        await self.get_roster()
        out("ready")
        asyncio.ensure_future(self.commands())

    def on_message(self, m):
        if m["type"] == "error":
            out("error", m["from"], m["error"]["condition"])
        elif m["body"]:
            out("message", m["from"], m["body"])

    def on_receipt(self, m):
        out("receipt", m["from"], m["receipt"])

    def on_presence(self, p):
        kind = p["type"]
        if kind == "error":
            out("error", p["from"], p["error"]["condition"])
            return
        if kind == "subscribe":
            out("subscribe", p["from"])
            return
        if kind in ("available", "away", "dnd", "xa", "chat"):
            show = p["show"] if p["show"] in ("away", "dnd", "xa", "chat") else ""
            out("presence", p["from"], "available", show, p["status"])
        else:
            out("presence", p["from"], kind, "", p["status"])

    async def commands(self):
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            f = line.rstrip("\n").split("\t")
            if f[0] == "msg":
                m = self.make_message(mto=f[1], mbody=f[2], mtype="chat")
                if len(f) > 3 and f[3] == "receipt":
                    m["request_receipt"] = True
                m["id"] = self.new_id()
                m.send()
                out("sent", m["id"])
            elif f[0] == "sub":
                self.send_presence(pto=f[1], ptype="subscribe")
            elif f[0] == "unsub":
                self.send_presence(pto=f[1], ptype="unsubscribe")
            elif f[0] == "pres":
                if f[1] == "unavailable":
                    self.send_presence(ptype="unavailable", pstatus=f[2] if len(f) > 2 else None)
                else:
                    self.send_presence(pshow=f[1] or None, pstatus=(f[2] if len(f) > 2 else None) or None)
            elif f[0] == "quit":
                break
        self.disconnect()


def main():
    jid, password, host, port = sys.argv[1:5]
    u = User(jid, password, ack="noack" not in sys.argv[5:])
    u.connect(host, int(port))
    asyncio.get_event_loop().run_until_complete(u.disconnected)


if __name__ == "__main__":
    main()
