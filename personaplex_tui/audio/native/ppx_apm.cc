// ppx-tui's C entry points onto WebRTC's audio processing module (webrtc-audio-processing 2.x),
// built by personaplex_tui/audio/apm_build.py and called through ctypes by
// personaplex_tui/audio/apm_native.py. See docs/echo-cancellation.md §WebRTC 2.1 built here.
//
// One module per handle, mono int16 blocks of 10 ms at one sample rate. The echo canceller is
// AEC3 with the suppressor made more transparent to the near end in double talk: WebRTC's own
// "more transparent" suppressor tunings (the values its WebRTC-Aec3EnforceMoreTransparent*
// field trials set) and a higher cap on the ERLE the suppressor credits the linear filter with.

#include <cstdint>
#include <memory>
#include <optional>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "webrtc/api/audio/audio_processing.h"
#include "webrtc/api/audio/echo_canceller3_config.h"
#include "webrtc/api/audio/echo_control.h"
#include "webrtc/modules/audio_processing/aec3/echo_canceller3.h"

namespace {

constexpr int kVersion = 2;  // bumped whenever the tuning, the entry points or the maths change

// Denormal floats flushed to zero while WebRTC runs, and the caller's setting put back after.
// Without it, the echo tail decaying through silence reached denormals, and a frame took 3 ms
// instead of 0.8 for runs of frames (x86-64, 2026-12-05); Chrome's builds run WebRTC so too.
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#elif defined(__aarch64__)
  FlushDenormals() {
    asm volatile("mrs %0, fpcr" : "=r"(saved_));
    asm volatile("msr fpcr, %0" : : "r"(saved_ | (uint64_t{1} << 24)));  // FZ
  }
  ~FlushDenormals() { asm volatile("msr fpcr, %0" : : "r"(saved_)); }

 private:
  uint64_t saved_;
#endif
};

webrtc::EchoCanceller3Config TunedConfig() {
  webrtc::EchoCanceller3Config c;
  // WebRTC-Aec3EnforceMoreTransparent{Normal,Nearend}Suppressor{,Hf}Tuning
  c.suppressor.normal_tuning.mask_lf.enr_transparent = 0.4f;
  c.suppressor.normal_tuning.mask_lf.enr_suppress = 0.5f;
  c.suppressor.nearend_tuning.mask_lf.enr_transparent = 1.29f;
  c.suppressor.nearend_tuning.mask_lf.enr_suppress = 1.3f;
  c.suppressor.normal_tuning.mask_hf.enr_transparent = 0.3f;
  c.suppressor.normal_tuning.mask_hf.enr_suppress = 0.4f;
  c.suppressor.nearend_tuning.mask_hf.enr_transparent = 1.09f;
  c.suppressor.nearend_tuning.mask_hf.enr_suppress = 1.1f;
  // The ERLE the residual echo estimate may assume, low and high bands (defaults 4 and 1.5).
  c.erle.max_l = 16.f;
  c.erle.max_h = 6.f;
  return c;
}

class TunedAec3Factory : public webrtc::EchoControlFactory {
 public:
  std::unique_ptr<webrtc::EchoControl> Create(int sample_rate_hz, int num_render_channels,
                                              int num_capture_channels) override {
    return std::make_unique<webrtc::EchoCanceller3>(TunedConfig(), std::nullopt, sample_rate_hz,
                                                    num_render_channels, num_capture_channels);
  }
};

struct Module {
  webrtc::scoped_refptr<webrtc::AudioProcessing> apm;
  webrtc::StreamConfig stream;
  Module(int rate) : stream(rate, 1) {}
};

}  // namespace

#define PPX_EXPORT __attribute__((visibility("default")))

// No C++ exception leaves these entry points (one would end the whole app in std::terminate):
// creating returns null, a block returns -1, and the Python side says so in one sentence.
extern "C" {

PPX_EXPORT int ppx_apm_version() { return kVersion; }

// A module at `sample_rate` Hz; each switch 0 or 1. `tuned` 0 keeps WebRTC's default AEC3.
PPX_EXPORT void* ppx_apm_create(int sample_rate, int echo, int noise, int high_pass, int gain,
                                int tuned) {
  try {
    auto module = std::make_unique<Module>(sample_rate);
    webrtc::AudioProcessingBuilder builder;
    if (echo && tuned) builder.SetEchoControlFactory(std::make_unique<TunedAec3Factory>());
    module->apm = builder.Create();
    if (!module->apm) return nullptr;
    webrtc::AudioProcessing::Config config;
    config.echo_canceller.enabled = echo != 0;
    config.noise_suppression.enabled = noise != 0;
    config.high_pass_filter.enabled = high_pass != 0;
    config.gain_controller2.enabled = gain != 0;
    module->apm->ApplyConfig(config);
    return module.release();
  } catch (...) {
    return nullptr;
  }
}

// One 10 ms block of the far end (what the speaker played). 0 on success.
PPX_EXPORT int ppx_apm_reverse(void* handle, const int16_t* far, int16_t* scratch) {
  try {
    auto* m = static_cast<Module*>(handle);
    FlushDenormals flush;
    return m->apm->ProcessReverseStream(far, m->stream, m->stream, scratch);
  } catch (...) {
    return -1;
  }
}

// One 10 ms block of the microphone, processed in place. 0 on success.
PPX_EXPORT int ppx_apm_forward(void* handle, int16_t* near, int delay_ms) {
  try {
    auto* m = static_cast<Module*>(handle);
    FlushDenormals flush;
    m->apm->set_stream_delay_ms(delay_ms);
    return m->apm->ProcessStream(near, m->stream, m->stream, near);
  } catch (...) {
    return -1;
  }
}

PPX_EXPORT void ppx_apm_destroy(void* handle) { delete static_cast<Module*>(handle); }

}  // extern "C"
