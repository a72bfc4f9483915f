-- CallExchange: Apache's own error replies on the gateway's URLs are JSON (mod_lua).
--
-- ErrorDocument in <LocationMatch> (callexchange.conf.in) covers the errors Apache makes
-- once it has merged the per-URL config. Some it makes before, or after resetting to the
-- server-wide config: TRACE refused by TraceEnable Off, %00 or %2F in the path, a path
-- climbing above the root (/../), a symlink refused during the directory walk. Those
-- would get the server's HTML page. This quick handler runs first for every request and,
-- for our URLs only, registers the JSON pages as this request's error responses
-- (ap_custom_response), which Apache prefers to any ErrorDocument; other URLs are not
-- touched (DECLINED at once). It also refuses URLs over MAX_URI bytes on our URLs with a
-- JSON 414 (Apache's own LimitRequestLine, 8190 bytes, answers before any URL is read).

local CODES = { 400, 403, 404, 405, 408, 411, 413, 414, 416, 500, 501, 502, 503, 504 }
local MAX_URI = 4096

-- The folder of error pages for a path, or nil when the path is not ours.
local function error_set(path)
    if path:find("%", 1, true) then
        -- %61pi is /api once Apache decodes it: decode unreserved characters the same way.
        path = path:gsub("%%(%x%x)", function(hex)
            local char = string.char(tonumber(hex, 16))
            if char:find("^[%w%-%._~]$") then return char end
            return "%" .. hex
        end)
    end
    path = path:gsub("//+", "/")
    local first = path:match("^/([^/]*)")
    if first == "api" and (path == "/api/v1" or path:sub(1, 8) == "/api/v1/") then
        return "call", path
    elseif first == "recorded" and (path == "/recorded/v1" or path:sub(1, 13) == "/recorded/v1/") then
        return "recordings", path
    elseif first == "wav-files" then
        return "wav-files", path
    end
    return nil
end

-- The methods of one of our URLs (as its path, normalised above), or nil. A 405 must list
-- them (RFC 9110, 15.5.6); Apache adds Allow to its own error page only, so for a 405 it
-- answers itself (TRACE, a method the static files refuse) errors/*/405.json adds it from
-- CALLEXCHANGE_ALLOW (callexchange.conf.in). The application's 405s send the same list.
local function allowed_methods(path)
    if path == "/api/v1/asteriskapi" or path == "/api/v1/asteriskapi.pl" then
        return "POST"
    elseif path == "/recorded/v1/find_phone_files" or path == "/recorded/v1/find_phone_files.pl" then
        return "GET, HEAD, POST"
    elseif path:sub(1, 11) == "/wav-files/" or path == "/api/v1/openapi.yaml"
            or path == "/api/v1/docs" or path:sub(1, 13) == "/api/v1/docs/" then
        return "GET, HEAD"
    end
    return nil
end

function json_errors(r)
    local set, path = error_set(r.uri or "")
    if not set then
        return apache2.DECLINED
    end
    local allow = allowed_methods(path)
    if allow then
        r.subprocess_env["CALLEXCHANGE_ALLOW"] = allow
    end
    for _, code in ipairs(CODES) do
        r:custom_response(code, "/callexchange-errors/" .. set .. "/" .. code .. ".json")
    end
    if #(r.unparsed_uri or "") > MAX_URI then
        return 414
    end
    return apache2.DECLINED
end

-- What each set's JSON errors say in `message` (as in errors/*/403.json).
local MESSAGES = {
    call = "We fail on making a call. caller : , callee : ",
    recordings = "We fail on finding the recordings.",
    ["wav-files"] = "We fail on fetching the recording.",
}

-- Plain HTTP on our URLs, once the gateway has an https:// name (install.sh --domain,
-- which renders the SetEnvIf naming it into its vhost file): a JSON 403 naming the https
-- URL for every client but this machine itself. Never a redirect: a client would follow
-- it with a GET (a POST's body lost) or, worse, after sending its api-key in clear.
-- Loopback (127.0.0.1, ::1) keeps plain HTTP: install.sh's own checks, local scripts.
function https_only(r)
    if r.is_https then
        return apache2.DECLINED
    end
    local base = r.subprocess_env["CALLEXCHANGE_HTTPS_URL"]
    if not base or base == "" then
        return apache2.DECLINED
    end
    local set, path = error_set(r.uri or "")
    if not set then
        return apache2.DECLINED
    end
    local ip = r.useragent_ip or ""
    if ip == "127.0.0.1" or ip == "::1" then
        return apache2.DECLINED
    end
    -- The path goes into the reply only when it is plainly one of ours (no quote, no
    -- backslash, nothing to escape in JSON).
    if not path:find("^[%w%-%._~/]*$") then
        path = "/"
    end
    r.status = 403
    r.content_type = "application/json; charset=utf-8"
    r.headers_out["Cache-Control"] = "no-store"
    r:puts('{"status": "403 Forbidden", "icon": "error", "error": "Plain http is not '
        .. 'served here (an api-key would cross the network in clear): use '
        .. base .. path .. '", "message": "' .. MESSAGES[set] .. '"}')
    return apache2.OK
end
