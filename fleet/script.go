package fleet

// Every script of this package that writes more than once checks first,
// with redis.acl_check_cmd (Redis 7.0 and later), that the user may run
// each of its writes, and fails before the first one when it may not: a
// script that Redis stops halfway (an ACL user without PUBLISH, say) would
// otherwise leave the writes before the refused one in place, as Redis
// does not roll a script back. On older Redis the check is skipped, and
// the scripts are ordered so that the command most likely to be refused
// (PUBLISH, whose channels an ACL grants apart from keys) runs first.
//
// Memory needs no check of its own: under maxmemory with noeviction Redis
// refuses a script at its first write, never between two.

// aclPrelude defines denied(cmd...), which each script calls with the
// commands it will run, their arguments as it will give them (values that
// are not known yet stand in as "0"). It answers nil when the user may run
// them all, else an error message that names the first refused one.
const aclPrelude = `
local function denied(...)
  if not redis.acl_check_cmd then return nil end
  for _, c in ipairs({...}) do
    if not redis.acl_check_cmd(unpack(c)) then
      return 'NOPERM this Redis user may not run ' .. c[1] .. ' on ' .. tostring(c[2]) .. ', so nothing was written'
    end
  end
  return nil
end
`
