-- One typical SMS per request, as the /sms page sends it.
wrk.method = "POST"
wrk.body = '{"sms":"Hey, are we still on for dinner tonight? Let me know when you leave work."}'
wrk.headers["Content-Type"] = "application/json"
