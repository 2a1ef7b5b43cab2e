-- wrk script for the ratelimit bench's "10 000 keys" variant: every
-- request carries one of 10 000 identities (x-user-id: user-0 ..
-- user-9999) in turn, so the filter keeps 10 000 live buckets.
local n = 0
request = function()
  n = (n + 1) % 10000
  return wrk.format(nil, nil, {["x-user-id"] = "user-" .. n, ["x-ab-variant"] = "forged"})
end
