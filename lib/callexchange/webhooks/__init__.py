"""The connect and hangup webhooks: the event's payload and its Standard Webhooks
signature, the durable spool, the retry policy, the background deliverer, and the
dialplan hook that spools an event and returns in milliseconds.

The path of an event::

    dialplan: AGI(callexchange-webhook.agi,connect|hangup)
      -> hook: read the call's channel variables over AGI (pbx.agi), build the legacy
         body (payload), write it durably into the spool, wake the running deliverer or
         start one (detached), exit: the dialplan goes on in milliseconds
      -> deliverer: peek -> POST -> delete, with requests over one keep-alive session;
         2xx ends an event, 410 stops it, anything else is retried with exponential
         back-off and jitter (retry) for 24 hours, then it is dead

Everything the hook imports must be quick to import (its whole run fits in 50 ms): this
package's __init__ imports nothing.
"""
