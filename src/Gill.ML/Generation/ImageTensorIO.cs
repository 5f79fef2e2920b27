using System.Runtime.InteropServices;
using Microsoft.ML.Data;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Generation;

/// <summary>
/// Conversions between image files and float RGB tensors [3,H,W] with values in [0,1].
/// Writing rounds x·255 to 8 bits (values outside [0,1] are clamped); files are written atomically.
/// </summary>
public static class ImageTensorIO
{
    /// <summary>Decodes an image file (PNG, JPEG, …) into a float32 tensor [3,H,W] in [0,1] (alpha dropped).</summary>
    public static Tensor Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Image file not found: {path}", path);
        return FromEncodedBytes(File.ReadAllBytes(path), path);
    }

    /// <summary>Decodes encoded image bytes (PNG, JPEG, …) into a float32 tensor [3,H,W] in [0,1].</summary>
    public static Tensor FromEncodedBytes(byte[] encoded, string? what = null)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        using var data = SKData.CreateCopy(encoded);
        using var codec = SKCodec.Create(data)
            ?? throw new InvalidDataException($"Cannot decode image {what ?? "bytes"}: not a supported image format.");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result != SKCodecResult.Success && result != SKCodecResult.IncompleteInput)
            throw new InvalidDataException($"Cannot decode image {what ?? "bytes"}: {result}.");
        int h = info.Height, w = info.Width, rowBytes = bitmap.RowBytes;
        var rgba = new byte[h * w * 4];
        var src = bitmap.GetPixelSpan();
        for (int y = 0; y < h; y++) src.Slice(y * rowBytes, w * 4).CopyTo(rgba.AsSpan(y * w * 4, w * 4));
        using var scope = torch.NewDisposeScope();
        var hwc = torch.tensor(rgba, new long[] { h, w, 4 }, ScalarType.Byte);
        var chw = hwc[.., .., ..3].permute(2, 0, 1).to(ScalarType.Float32).div(255f).contiguous();
        return chw.MoveToOuterDisposeScope();
    }

    /// <summary>Encodes an image tensor [3,H,W] (or [1,3,H,W]) in [0,1] as PNG bytes.</summary>
    public static byte[] ToPngBytes(Tensor image)
    {
        using var bitmap = ToBitmap(image);
        using var skImage = SKImage.FromBitmap(bitmap);
        using var png = skImage.Encode(SKEncodedImageFormat.Png, 100)
            ?? throw new InvalidOperationException("PNG encoding failed.");
        return png.ToArray();
    }

    /// <summary>Saves an image tensor [3,H,W] in [0,1] as a PNG file: written to a temporary file beside it, then renamed.</summary>
    public static void SavePng(Tensor image, string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var bytes = ToPngBytes(image);
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllBytes(tmp, bytes);
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>Converts an image tensor [3,H,W] in [0,1] to an ML.NET <see cref="MLImage"/> (RGBA32).</summary>
    public static MLImage ToMLImage(Tensor image)
    {
        var (rgba, h, w) = ToRgba(image);
        return MLImage.CreateFromPixels(w, h, MLPixelFormat.Rgba32, rgba);
    }

    /// <summary>Converts an ML.NET <see cref="MLImage"/> to a float32 tensor [3,H,W] in [0,1].</summary>
    public static Tensor FromMLImage(MLImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var pixels = image.Pixels.ToArray();
        int h = image.Height, w = image.Width;
        if (pixels.Length != h * w * 4)
            throw new ArgumentException($"MLImage pixel buffer has {pixels.Length} bytes, expected {h}×{w}×4.", nameof(image));
        using var scope = torch.NewDisposeScope();
        var hwc = torch.tensor(pixels, new long[] { h, w, 4 }, ScalarType.Byte);
        // Bgra32 stores blue first.
        var rgb = image.PixelFormat == MLPixelFormat.Bgra32 ? hwc[.., .., TensorIndex.Tensor(torch.tensor(new long[] { 2, 1, 0 }))] : hwc[.., .., ..3];
        return rgb.permute(2, 0, 1).to(ScalarType.Float32).div(255f).contiguous().MoveToOuterDisposeScope();
    }

    private static (byte[] Rgba, int Height, int Width) ToRgba(Tensor image)
    {
        ArgumentNullException.ThrowIfNull(image);
        using var scope = torch.NewDisposeScope();
        var t = image;
        if (t.dim() == 4 && t.shape[0] == 1) t = t[0];
        if (t.dim() != 3 || t.shape[0] != 3)
            throw new ArgumentException($"Image tensor must have shape [3,H,W] (or [1,3,H,W]); got [{string.Join(",", image.shape)}].", nameof(image));
        if (!t.is_floating_point())
            throw new ArgumentException($"Image tensor must be floating point in [0,1]; got {t.dtype}.", nameof(image));
        int h = (int)t.shape[1], w = (int)t.shape[2];
        var bytes = t.detach().cpu().to(ScalarType.Float32).nan_to_num(0).clamp(0, 1).mul(255f).round().to(ScalarType.Byte);
        var alpha = torch.full(new long[] { 1, h, w }, 255, ScalarType.Byte);
        var hwc = torch.cat(new[] { bytes, alpha }, 0).permute(1, 2, 0).contiguous();
        return (hwc.bytes.ToArray(), h, w);
    }

    private static SKBitmap ToBitmap(Tensor image)
    {
        var (rgba, h, w) = ToRgba(image);
        var bitmap = new SKBitmap(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        int rowBytes = bitmap.RowBytes;
        var dst = bitmap.GetPixels();
        for (int y = 0; y < h; y++) Marshal.Copy(rgba, y * w * 4, dst + y * rowBytes, w * 4);
        return bitmap;
    }
}
