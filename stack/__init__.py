"""The platform stack: cdktf and the AWS provider bindings are imported only in this package.

`stack.config` is pure and cheap to import; `stack.platform` pulls in the AWS
bindings (15-25 s the first time in a process).
"""
