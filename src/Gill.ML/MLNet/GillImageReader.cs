using Microsoft.ML.Data;
using SkiaSharp;

namespace Gill.ML.MLNet;

/// <summary>Turns <c>MLImage</c> values and image files into <see cref="SKBitmap"/>s (8-bit, 4 channels).</summary>
public static class GillImageReader
{
    /// <summary>
    /// Copies an <see cref="MLImage"/> into a new <see cref="SKBitmap"/> (same channel order: BGRA or RGBA, unpremultiplied).
    /// The caller owns the result.
    /// </summary>
    public static SKBitmap FromMLImage(MLImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var colorType = image.PixelFormat switch
        {
            MLPixelFormat.Bgra32 => SKColorType.Bgra8888,
            MLPixelFormat.Rgba32 => SKColorType.Rgba8888,
            _ => throw new NotSupportedException($"MLImage pixel format {image.PixelFormat} is not supported (expected Bgra32 or Rgba32)."),
        };
        var pixels = image.Pixels;
        long expected = (long)image.Width * image.Height * 4;
        if (pixels.Length != expected)
            throw new InvalidDataException($"MLImage {image.Width}x{image.Height} holds {pixels.Length} pixel bytes, expected {expected}.");
        var bitmap = new SKBitmap(new SKImageInfo(image.Width, image.Height, colorType, SKAlphaType.Unpremul));
        try
        {
            int row = image.Width * 4;
            unsafe
            {
                byte* basePtr = (byte*)bitmap.GetPixels();
                for (int y = 0; y < image.Height; y++)
                    pixels.Slice(y * row, row).CopyTo(new Span<byte>(basePtr + (long)y * bitmap.RowBytes, row));
            }
            return bitmap;
        }
        catch
        {
            bitmap.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Decodes an image file (any format SkiaSharp reads: PNG, JPEG, WebP, BMP, GIF…). Relative paths are resolved against
    /// <paramref name="folder"/> when given. The caller owns the result.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a decodable image.</exception>
    public static SKBitmap FromFile(string path, string? folder = null)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new InvalidDataException("The image path is empty.");
        var full = folder is not null && !Path.IsPathRooted(path) ? Path.Combine(folder, path) : path;
        if (!File.Exists(full)) throw new FileNotFoundException($"Image file not found: '{full}'.", full);
        var bitmap = SKBitmap.Decode(full);
        if (bitmap is null) throw new InvalidDataException($"'{full}' is not a readable image file (SkiaSharp could not decode it).");
        return bitmap;
    }
}
