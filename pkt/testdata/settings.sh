# Settings the engine tests share (interpreted, not run, by the engine).
sysctl -q net.ipv4.tcp_timestamps=0
sysctl -q net.ipv4.tcp_rmem="4096 131072 $((16*1024*1024))"
ip tcp_metrics flush all > /dev/null 2>&1
sysctl -q net.ipv4.tcp_congestion_control=cubic
