// bench::stream<T>: the FIFO between dataflow stages.
//
// Under Vitis HLS synthesis (__SYNTHESIS__ defined) it is hls::stream<T> from the tool's own header.
// Under plain g++ it is this project's own minimal stand-in (the Xilinx hls_stream.h carries a
// proprietary licence and is deliberately not vendored), with the same member functions the kernels use.
// Like Vitis C-simulation it is unbounded and stages run one after another, so a depth that would
// deadlock on hardware is not detected here (measurement.md section 11).
#ifndef BENCH_STREAM_H
#define BENCH_STREAM_H

#ifdef __SYNTHESIS__

#include <hls_stream.h>

namespace bench {
template <typename T>
using stream = hls::stream<T>;
}  // namespace bench

#else

#include <cstddef>
#include <cstdio>
#include <deque>

namespace bench {

template <typename T>
class stream {
 public:
  stream() = default;
  explicit stream(const char* name) : name_(name) {}
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  bool empty() const { return fifo_.empty(); }
  // Never full: C-simulation FIFOs are unbounded.
  bool full() const { return false; }
  std::size_t size() const { return fifo_.size(); }

  void write(const T& value) { fifo_.push_back(value); }
  bool write_nb(const T& value) {
    fifo_.push_back(value);
    return true;
  }

  // A blocking read of an empty stream cannot block in sequential C-simulation; like Vitis C-sim it
  // warns and returns a value-initialized T, which a kernel test then catches as a wrong result.
  T read() {
    T value{};
    if (fifo_.empty()) {
      std::fprintf(stderr, "bench::stream '%s': read from an empty stream (dataflow producer/consumer mismatch)\n",
                   name_);
      return value;
    }
    value = fifo_.front();
    fifo_.pop_front();
    return value;
  }
  void read(T& value) { value = read(); }
  bool read_nb(T& value) {
    if (fifo_.empty()) return false;
    value = fifo_.front();
    fifo_.pop_front();
    return true;
  }

 private:
  const char* name_ = "unnamed";
  std::deque<T> fifo_;
};

}  // namespace bench

#endif  // __SYNTHESIS__

#endif  // BENCH_STREAM_H
