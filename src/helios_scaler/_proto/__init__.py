"""Generated from proto/externalscaler.proto by scripts/gen_proto.sh; do not edit."""
