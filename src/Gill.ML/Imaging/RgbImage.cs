using Microsoft.ML.Data;
using SkiaSharp;

namespace Gill.ML.Imaging;

/// <summary>
/// An 8-bit RGB image: <see cref="Width"/>×<see cref="Height"/> pixels, row-major, three interleaved bytes (R, G, B) per
/// pixel. Alpha is dropped when converting from RGBA/BGRA sources, as PIL's <c>convert("RGB")</c> does.
/// </summary>
public sealed class RgbImage
{
    /// <summary>Wraps RGB bytes (copied).</summary>
    /// <exception cref="ArgumentException">The byte count is not width × height × 3.</exception>
    public RgbImage(int width, int height, ReadOnlySpan<byte> rgb)
    {
        if (width <= 0 || height <= 0)
            throw new ArgumentOutOfRangeException(nameof(width), $"Image size {width}x{height} is not positive.");
        if (rgb.Length != (long)width * height * 3)
            throw new ArgumentException($"A {width}x{height} RGB image needs {(long)width * height * 3} bytes, got {rgb.Length}.", nameof(rgb));
        Width = width;
        Height = height;
        Pixels = rgb.ToArray();
    }

    private RgbImage(int width, int height, byte[] rgb)
    {
        Width = width;
        Height = height;
        Pixels = rgb;
    }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }

    /// <summary>Height in pixels.</summary>
    public int Height { get; }

    /// <summary>RGB bytes, row-major, length Width × Height × 3.</summary>
    public byte[] Pixels { get; }

    internal static RgbImage Own(int width, int height, byte[] rgb) => new(width, height, rgb);

    /// <summary>
    /// Converts an ML.NET image. Its <see cref="MLImage.PixelFormat"/> says the byte order (BGRA or RGBA, 32 bits per pixel);
    /// the alpha byte is dropped.
    /// </summary>
    /// <exception cref="ArgumentException">The pixel format is unknown or not 32 bits per pixel.</exception>
    public static RgbImage FromMLImage(MLImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var px = image.Pixels;
        int w = image.Width, h = image.Height;
        if (image.BitsPerPixel != 32 || px.Length != (long)w * h * 4)
            throw new ArgumentException($"MLImage of {w}x{h} has {image.BitsPerPixel} bits per pixel and {px.Length} bytes; expected 32-bit BGRA or RGBA.", nameof(image));
        var (r, b) = image.PixelFormat switch
        {
            MLPixelFormat.Bgra32 => (2, 0),
            MLPixelFormat.Rgba32 => (0, 2),
            _ => throw new ArgumentException($"MLImage pixel format {image.PixelFormat} is not supported (expected Bgra32 or Rgba32).", nameof(image)),
        };
        var rgb = new byte[(long)w * h * 3];
        for (long i = 0, j = 0; i < px.Length; i += 4, j += 3)
        {
            rgb[j] = px[(int)i + r];
            rgb[j + 1] = px[(int)i + 1];
            rgb[j + 2] = px[(int)i + b];
        }
        return new RgbImage(w, h, rgb);
    }

    /// <summary>
    /// Decodes an image file (JPEG, PNG, WebP, BMP, GIF first frame, …) with SkiaSharp, without colour management or EXIF
    /// rotation (as PIL's <c>Image.open(...).convert("RGB")</c>).
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file cannot be decoded (the message names it).</exception>
    public static RgbImage FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Image file not found: '{path}'.", path);
        using var stream = File.OpenRead(path);
        using var codec = SKCodec.Create(stream, out var result);
        if (codec is null)
            throw new InvalidDataException($"Cannot decode image '{path}': {result}.");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        var status = codec.GetPixels(info, bitmap.GetPixels());
        if (status != SKCodecResult.Success)
            throw new InvalidDataException(status == SKCodecResult.IncompleteInput
                ? $"Image '{path}' is truncated (incomplete input)."
                : $"Cannot decode image '{path}': {status}.");
        var rgba = bitmap.GetPixelSpan();
        int w = info.Width, h = info.Height;
        var rgb = new byte[(long)w * h * 3];
        int stride = bitmap.RowBytes;
        for (int y = 0; y < h; y++)
        {
            var row = rgba.Slice(y * stride, w * 4);
            for (int x = 0; x < w; x++)
            {
                long j = ((long)y * w + x) * 3;
                rgb[j] = row[x * 4];
                rgb[j + 1] = row[x * 4 + 1];
                rgb[j + 2] = row[x * 4 + 2];
            }
        }
        return new RgbImage(w, h, rgb);
    }

    /// <summary>Resizes with Pillow's 8-bit convolution resampling (see <see cref="PilResampler"/>).</summary>
    public RgbImage Resize(int width, int height, PilResampleFilter filter = PilResampleFilter.Bicubic) =>
        width == Width && height == Height
            ? new RgbImage(Width, Height, (byte[])Pixels.Clone())
            : new RgbImage(width, height, PilResampler.Resize(Pixels, Width, Height, 3, width, height, filter));
}
