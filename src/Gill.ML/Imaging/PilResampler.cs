namespace Gill.ML.Imaging;

/// <summary>Resampling filters of Pillow's convolution resampler (the values of PIL's <c>Image.Resampling</c>).</summary>
public enum PilResampleFilter
{
    /// <summary>Box filter (support 0.5), PIL value 4.</summary>
    Box = 4,
    /// <summary>Triangle filter (support 1), PIL value 2.</summary>
    Bilinear = 2,
    /// <summary>Hamming-windowed filter (support 1), PIL value 5.</summary>
    Hamming = 5,
    /// <summary>Keys cubic with a = −0.5 (support 2), PIL value 3: CLIP's resampling.</summary>
    Bicubic = 3,
    /// <summary>Lanczos-3 (support 3), PIL value 1.</summary>
    Lanczos = 1,
}

/// <summary>
/// Pillow's 8-bit convolution resampling, reproduced exactly: separable (horizontal pass first, then vertical), filter
/// support scaled by the downscale factor (antialiasing), weights normalised per output pixel and then quantised to
/// 22-bit fixed point, accumulation rounded and clipped to 0…255 after each pass. An axis whose size does not change is
/// not filtered at all.
/// </summary>
public static class PilResampler
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Support (half-width at scale 1) of a filter.</summary>
    public static double Support(PilResampleFilter filter) => filter switch
    {
        PilResampleFilter.Box => 0.5,
        PilResampleFilter.Bilinear => 1.0,
        PilResampleFilter.Hamming => 1.0,
        PilResampleFilter.Bicubic => 2.0,
        PilResampleFilter.Lanczos => 3.0,
        _ => throw new ArgumentOutOfRangeException(nameof(filter), filter, "Unknown resampling filter."),
    };

    /// <summary>The filter's kernel value at <paramref name="x"/>.</summary>
    public static double Kernel(PilResampleFilter filter, double x)
    {
        switch (filter)
        {
            case PilResampleFilter.Box:
                return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
            case PilResampleFilter.Bilinear:
                x = Math.Abs(x);
                return x < 1.0 ? 1.0 - x : 0.0;
            case PilResampleFilter.Hamming:
                x = Math.Abs(x);
                if (x == 0.0) return 1.0;
                if (x >= 1.0) return 0.0;
                x *= Math.PI;
                return Math.Sin(x) / x * ((double)0.54f + (double)0.46f * Math.Cos(x));
            case PilResampleFilter.Bicubic:
            {
                const double a = -0.5;
                x = Math.Abs(x);
                if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
                if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
                return 0.0;
            }
            case PilResampleFilter.Lanczos:
                return -3.0 <= x && x < 3.0 ? Sinc(x) * Sinc(x / 3) : 0.0;
            default:
                throw new ArgumentOutOfRangeException(nameof(filter), filter, "Unknown resampling filter.");
        }
    }

    private static double Sinc(double x)
    {
        if (x == 0.0) return 1.0;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    /// <summary>
    /// The normalised (floating-point) weights of each output sample along one axis: for output <c>i</c>, input samples
    /// <c>First[i] … First[i] + Weights[i].Length − 1</c>.
    /// </summary>
    public static (int[] First, double[][] Weights) Coefficients(int inSize, int outSize, PilResampleFilter filter)
    {
        if (inSize <= 0 || outSize <= 0) throw new ArgumentOutOfRangeException(nameof(outSize), $"Sizes must be positive (in {inSize}, out {outSize}).");
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = Support(filter) * filterScale;
        var first = new int[outSize];
        var weights = new double[outSize][];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale;
            double ss = 1.0 / filterScale;
            int xmin = Math.Max((int)(center - support + 0.5), 0);
            int xmax = Math.Min((int)(center + support + 0.5), inSize) - xmin;
            var w = new double[Math.Max(xmax, 0)];
            double sum = 0;
            for (int x = 0; x < w.Length; x++)
            {
                w[x] = Kernel(filter, (x + xmin - center + 0.5) * ss);
                sum += w[x];
            }
            if (sum != 0.0)
                for (int x = 0; x < w.Length; x++) w[x] /= sum;
            first[i] = xmin;
            weights[i] = w;
        }
        return (first, weights);
    }

    private static int[][] Quantize(double[][] weights)
    {
        var q = new int[weights.Length][];
        for (int i = 0; i < weights.Length; i++)
        {
            q[i] = new int[weights[i].Length];
            for (int x = 0; x < weights[i].Length; x++)
            {
                double w = weights[i][x] * (1 << PrecisionBits);
                q[i][x] = w < 0 ? (int)(-0.5 + w) : (int)(0.5 + w);
            }
        }
        return q;
    }

    private static byte Clip8(long v)
    {
        if (v >= (1L << PrecisionBits << 8)) return 255;
        if (v <= 0) return 0;
        return (byte)(v >> PrecisionBits);
    }

    /// <summary>
    /// Resizes interleaved 8-bit pixels (<paramref name="channels"/> per pixel, row-major) to
    /// <paramref name="outWidth"/>×<paramref name="outHeight"/> exactly as Pillow's <c>Image.resize</c> does for
    /// 8-bit images (no reducing gap).
    /// </summary>
    public static byte[] Resize(ReadOnlySpan<byte> pixels, int width, int height, int channels, int outWidth, int outHeight, PilResampleFilter filter)
    {
        if (width <= 0 || height <= 0 || channels <= 0)
            throw new ArgumentOutOfRangeException(nameof(width), $"Image size {width}x{height}x{channels} is not positive.");
        if (outWidth <= 0 || outHeight <= 0)
            throw new ArgumentOutOfRangeException(nameof(outWidth), $"Target size {outWidth}x{outHeight} is not positive.");
        if (pixels.Length != (long)width * height * channels)
            throw new ArgumentException($"Expected {(long)width * height * channels} bytes for a {width}x{height} image with {channels} channels, got {pixels.Length}.", nameof(pixels));

        byte[] current = pixels.ToArray();
        int curW = width, curH = height;
        if (outWidth != width)
        {
            var (first, w) = Coefficients(width, outWidth, filter);
            var k = Quantize(w);
            var dst = new byte[(long)outWidth * curH * channels];
            for (int y = 0; y < curH; y++)
            {
                int rowIn = y * curW * channels, rowOut = y * outWidth * channels;
                for (int xo = 0; xo < outWidth; xo++)
                {
                    var kk = k[xo];
                    int x0 = first[xo];
                    for (int c = 0; c < channels; c++)
                    {
                        long ss = 1L << (PrecisionBits - 1);
                        for (int t = 0; t < kk.Length; t++)
                            ss += current[rowIn + (x0 + t) * channels + c] * (long)kk[t];
                        dst[rowOut + xo * channels + c] = Clip8(ss);
                    }
                }
            }
            current = dst;
            curW = outWidth;
        }
        if (outHeight != height)
        {
            var (first, w) = Coefficients(height, outHeight, filter);
            var k = Quantize(w);
            int stride = curW * channels;
            var dst = new byte[(long)curW * outHeight * channels];
            for (int yo = 0; yo < outHeight; yo++)
            {
                var kk = k[yo];
                int y0 = first[yo];
                for (int i = 0; i < stride; i++)
                {
                    long ss = 1L << (PrecisionBits - 1);
                    for (int t = 0; t < kk.Length; t++)
                        ss += current[(y0 + t) * stride + i] * (long)kk[t];
                    dst[yo * stride + i] = Clip8(ss);
                }
            }
            current = dst;
        }
        return current;
    }
}
