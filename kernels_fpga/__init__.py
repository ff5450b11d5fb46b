"""The FPGA side: HLS C++ kernels (C-simulation through g++), pyxrt host code, and the analytic device model."""
