using SkiaSharp;

namespace Gill.ML.Stages.VisualFeatures;

/// <summary>How an image is brought to the model's input size.</summary>
public enum ImageResizeMode
{
    /// <summary>Stretch to the target size (aspect ratio not kept).</summary>
    Stretch,
    /// <summary>Scale the shorter side to the target, then crop the centre (CLIP, torchvision Resize+CenterCrop).</summary>
    CenterCrop,
    /// <summary>Scale the longer side to the target and pad the rest with black.</summary>
    Pad,
}

/// <summary>Order of the colour planes of the model input.</summary>
public enum ChannelOrder
{
    /// <summary>Red, green, blue.</summary>
    Rgb,
    /// <summary>Blue, green, red.</summary>
    Bgr,
}

/// <summary>
/// Image → planar float tensor data (<c>[B, 3, H, W]</c>, row-major): resize, channel order, then
/// <c>(pixel · Scale − Mean[c]) / Std[c]</c> with pixels in 0–255.
/// </summary>
public sealed class ImagePreprocessor
{
    /// <summary>Target width.</summary>
    public int Width { get; init; } = 224;

    /// <summary>Target height.</summary>
    public int Height { get; init; } = 224;

    /// <summary>Resize mode.</summary>
    public ImageResizeMode ResizeMode { get; init; } = ImageResizeMode.CenterCrop;

    /// <summary>Channel order of the output planes.</summary>
    public ChannelOrder ChannelOrder { get; init; } = ChannelOrder.Rgb;

    /// <summary>Factor applied to 0–255 pixel values first (1/255 gives 0–1).</summary>
    public float Scale { get; init; } = 1f / 255f;

    /// <summary>Per-plane mean subtracted after scaling (in output channel order).</summary>
    public float[] Mean { get; init; } = { 0f, 0f, 0f };

    /// <summary>Per-plane standard deviation divided by last (in output channel order).</summary>
    public float[] Std { get; init; } = { 1f, 1f, 1f };

    /// <summary>Resampling quality used when resizing.</summary>
    public SKFilterQuality FilterQuality { get; init; } = SKFilterQuality.High;

    /// <summary>Number of floats of one image.</summary>
    public int ImageSize => 3 * Width * Height;

    /// <summary>Checks the settings.</summary>
    public void Validate()
    {
        if (Width <= 0 || Height <= 0) throw new ArgumentOutOfRangeException(nameof(Width), $"Image size must be positive, got {Width}x{Height}.");
        if (Mean is not { Length: 3 }) throw new ArgumentException("Mean needs 3 values (one per channel).", nameof(Mean));
        if (Std is not { Length: 3 } || Std.Any(s => s == 0)) throw new ArgumentException("Std needs 3 non-zero values (one per channel).", nameof(Std));
    }

    /// <summary>Preprocesses a batch into a new array of <c>images.Count × 3 × Height × Width</c> floats.</summary>
    public float[] Process(IReadOnlyList<SKBitmap> images)
    {
        Validate();
        var result = new float[(long)images.Count * ImageSize];
        for (int i = 0; i < images.Count; i++) ProcessInto(images[i], result.AsSpan(i * ImageSize, ImageSize));
        return result;
    }

    /// <summary>Preprocesses one image into <paramref name="destination"/> (3 × Height × Width floats).</summary>
    public void ProcessInto(SKBitmap image, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (destination.Length != ImageSize) throw new ArgumentException($"Destination holds {destination.Length} floats, expected {ImageSize}.", nameof(destination));
        using var owned = Resize(image);
        var bmp = owned ?? image;
        bool bgra = bmp.ColorType == SKColorType.Bgra8888;
        if (!bgra && bmp.ColorType != SKColorType.Rgba8888)
            throw new NotSupportedException($"Image colour type {bmp.ColorType} is not supported (expected Bgra8888 or Rgba8888).");
        // source byte offsets of R, G, B within a pixel
        int r = bgra ? 2 : 0, g = 1, b = bgra ? 0 : 2;
        int[] src = ChannelOrder == ChannelOrder.Rgb ? new[] { r, g, b } : new[] { b, g, r };
        int plane = Width * Height;
        unsafe
        {
            byte* basePtr = (byte*)bmp.GetPixels();
            for (int c = 0; c < 3; c++)
            {
                float scale = Scale / Std[c], shift = Mean[c] / Std[c];
                int off = src[c];
                var dst = destination.Slice(c * plane, plane);
                for (int y = 0; y < Height; y++)
                {
                    byte* row = basePtr + (long)y * bmp.RowBytes;
                    for (int x = 0; x < Width; x++) dst[y * Width + x] = row[x * 4 + off] * scale - shift;
                }
            }
        }
    }

    /// <summary>Returns a resized copy, or null when the image already has the target size.</summary>
    private SKBitmap? Resize(SKBitmap image)
    {
        if (image.Width == Width && image.Height == Height && image.ColorType is SKColorType.Bgra8888 or SKColorType.Rgba8888) return null;
        var info = new SKImageInfo(Width, Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var result = new SKBitmap(info);
        try
        {
            using var canvas = new SKCanvas(result);
            canvas.Clear(SKColors.Black);
            using var paint = new SKPaint { FilterQuality = FilterQuality, IsAntialias = true };
            float w = image.Width, h = image.Height;
            SKRect dest;
            SKRect srcRect = new(0, 0, w, h);
            switch (ResizeMode)
            {
                case ImageResizeMode.Stretch:
                    dest = new SKRect(0, 0, Width, Height);
                    break;
                case ImageResizeMode.CenterCrop:
                    {
                        float s = Math.Max(Width / w, Height / h);
                        float cw = Width / s, ch = Height / s;
                        srcRect = SKRect.Create((w - cw) / 2, (h - ch) / 2, cw, ch);
                        dest = new SKRect(0, 0, Width, Height);
                        break;
                    }
                default:
                    {
                        float s = Math.Min(Width / w, Height / h);
                        float dw = w * s, dh = h * s;
                        dest = SKRect.Create((Width - dw) / 2, (Height - dh) / 2, dw, dh);
                        break;
                    }
            }
            canvas.DrawBitmap(image, srcRect, dest, paint);
            canvas.Flush();
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }
}
